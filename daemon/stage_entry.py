"""The target of every spawned stage process: import the stage's module, run its main."""
from __future__ import annotations

import importlib
import sys
import traceback

from voxpipe.stages.runtime import StageArgs

STAGE_MODULES = {"frontend": "voxpipe.stages.frontend.stage", "worker": "voxpipe.stages.worker.stage", "merger": "voxpipe.stages.merger.stage",
                 "http": "voxpipe.stages.http.stage"}


def run_stage(args: StageArgs) -> None:
    try:
        importlib.import_module(STAGE_MODULES[args.role]).main(args)
    except Exception:
        print(f"voxpipe {args.role} {args.name}: fatal error", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(3)
