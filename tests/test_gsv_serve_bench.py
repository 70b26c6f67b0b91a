"""A tiny run of the GPT-SoVITS serving benchmark (reference package, ours one at a time,
ours batched): its table has the three modes at each concurrency, with finite numbers.
No speed is asserted. It takes ~25 s on two idle cores but ~90 s on two busy ones
(writing the voice and loading both implementations is most of it), so it runs only with
VOXPIPE_BENCH=1; it needs the reference package (see tests/test_gpt_sovits_exact.py)."""
from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("VOXPIPE_GSV_REFERENCE", ROOT / ".cache" / "gsv-reference"))

pytestmark = [
    pytest.mark.slow, pytest.mark.reference,
    pytest.mark.skipif(os.environ.get("VOXPIPE_BENCH") != "1", reason="a 25-90 s benchmark run: set VOXPIPE_BENCH=1"),
    pytest.mark.skipif(not (REFERENCE / "GPT_SoVITS").is_dir(),
                       reason=f"reference GPT-SoVITS (gpt-sovits-cpufast 0.1.0) not installed at {REFERENCE}"),
]


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_tiny_run_reports_three_modes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("matplotlib")
    out = tmp_path / "serve"
    run = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "bench", "gsv", "--size", "tiny",
                          "--concurrency", "1", "3", "--modes", "reference", "sequential", "batched",
                          "--reference", str(REFERENCE), "--out", str(out),
                          "--json", str(tmp_path / "serve.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    rows = _rows((tmp_path / "serve.md").read_text(encoding="utf-8"))
    assert {(int(r[0]), r[1]) for r in rows} == {(n, m) for n in (1, 3) for m in ("reference", "sequential", "batched")}
    for row in rows:
        numbers = [float(x) for x in row[3:6] + row[7:8]]  # requests/s, mean and p50 first audio, audio/request
        assert all(math.isfinite(x) and x > 0 for x in numbers), row
        assert (row[6] == "n/a") == (row[0] == "1")  # a correlation needs 3 requests or more
        assert row[2].count("/") == 1  # the precision that ran: decoder/renderer
    # Lengths follow the texts by one rule on every side: the same audio per request.
    assert len({row[7] for row in rows if row[0] == "3"}) == 1
    assert re.search(r"N=3 batched \(\w+/\w+\) vs reference: ", run.stdout)
    data = json.loads((tmp_path / "serve.json").read_text(encoding="utf-8"))
    assert {(r["concurrency"], r["mode"]) for r in data["rows"]} == {(int(r[0]), r[1]) for r in rows}
    assert set(data["rows"][0]) >= {"concurrency", "mode", "requests_per_s", "first_audio_mean_s",
                                    "first_audio_p50_s", "first_audio_length_corr", "precision"}
    assert (tmp_path / "serve.png").read_bytes().startswith(b"\x89PNG")
