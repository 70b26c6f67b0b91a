"""Run the reference GPT-SoVITS runner by path, as the exactness tests do:

    python tests/gsv_reference_runner.py REFERENCE_ROOT INPUT.json

The runner itself is package code, voxpipe/bench/gsv_reference_runner.py (`voxpipe bench
gsv` runs it as `python -m voxpipe.bench.gsv_reference_runner`); see its docstring."""
from __future__ import annotations

import sys

from voxpipe.bench.gsv_reference_runner import main

if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
