"""tools/renderer_quality.py runs: the onnx engine's vocoder over the torch latent of a
bench text, against torch's fp32 render of it."""
from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("librosa")

from tests.dev_scripts import load_script  # noqa: E402

pytestmark = [pytest.mark.slow]  # loads joe in torch and exports its split graphs


def test_onnx_vocoder_row_renders_joe_like_torch(tmp_path):
    tool = load_script("renderer_quality")
    threads = torch.get_num_threads()
    try:
        assert tool.main(["--precisions", "onnx", "--limit", "1", "--out", str(tmp_path / "out")]) == 0
    finally:
        torch.set_num_threads(threads)  # the tool sets its own
    table = (tmp_path / "out" / "renderer-quality.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| onnx |"))
    snr_min = float(re.split(r"\s*\|\s*", row)[2])
    assert snr_min > 80.0  # the same fp32 arithmetic, up to rounding
