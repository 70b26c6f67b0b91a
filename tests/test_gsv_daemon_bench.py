"""`voxpipe bench gsv`'s daemon mode: the real daemon with its defaults, timed from the
client, its requests ending at the benchmark's lengths through the voice's own
voice.toml (`max_tokens_per_phone`), and each row naming the precision that ran."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_daemon_mode_serves_the_same_lengths_and_reports_precision(tmp_path):
    out = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "bench", "gsv", "--size", "tiny",
                          "--concurrency", "3", "--modes", "batched", "daemon", "--precision", "fp32",
                          "--out", str(tmp_path / "gsv"), "--json", str(tmp_path / "gsv.json")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gsv.json").read_text())
    rows = {row["mode"]: row for row in report["rows"]}
    assert set(rows) == {"batched", "daemon"} and report["precision"] == "fp32"
    assert rows["daemon"]["precision"] == rows["batched"]["precision"] == "fp32/fp32"
    # 3 tokens per phone on both sides: the same audio per request (to a window's rounding).
    assert rows["daemon"]["audio_per_request_s"] == pytest.approx(rows["batched"]["audio_per_request_s"], rel=0.02)
    assert rows["daemon"]["requests_per_s"] > 0 and rows["daemon"]["first_audio_mean_s"] > 0
    assert (tmp_path / "gsv.png").stat().st_size > 0 and "| 3 | daemon | fp32/fp32 |" in (tmp_path / "gsv.md").read_text()


def test_a_voice_caps_its_tokens_per_phone(tmp_path):
    """Without a cap a random voice decodes to the GPT's max_sec (it never says EOS)."""
    import numpy as np

    from voxpipe.stages.engines.base import EngineSettings
    from voxpipe.stages.families.base import RunnerSettings
    from voxpipe.stages.families.gpt_sovits import GptSovitsFamily
    from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine
    from voxpipe.stages.families.gpt_sovits.item import GsvItem, item_chunk
    from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice
    from voxpipe.stages.voices import VoiceCatalog

    voice_dir = write_random_gsv_voice(tmp_path, "capped", "v2", seed=4)
    toml = voice_dir / "voice.toml"
    toml.write_text("max_tokens_per_phone = 2.5\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    spec = VoiceCatalog(tmp_path).get("capped")
    assert spec.settings.max_tokens_per_phone == 2.5
    engine = GptSovitsEngine(EngineSettings(threads=1, options={"gsv_decoder_precision": "fp32",
                                                                "gsv_renderer_precision": "fp32",
                                                                "gsv_prefill_precision": "fp32"}))
    voice = engine.load_voice(spec)
    runner = GptSovitsFamily().runner(engine, RunnerSettings())
    ids = [95, 36, 138, 181, 12, 40, 7, 8]
    runner.admit(voice, item_chunk(GsvItem(np.asarray(ids), 0.0, 1.0, 3, (("en", "", len(ids), ()),)), "r"))
    seq = next(iter(runner.streams.values()))
    samples = 0
    while len(runner):
        samples += sum(len(p.audio) for p in runner.step(0.0).pieces)
    assert len(seq.seq.tokens) == 20  # 2.5 x 8 phones
    assert samples == 20 * 2 * voice.model.cfg.upsample_factor
