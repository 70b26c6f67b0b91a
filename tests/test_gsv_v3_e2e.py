"""Random-weight GPT-SoVITS v3 and v4 voices served end to end: `voxpipe voice random
--version v3|v4` writes them, a daemon serves them, `voxpipe say` gets 24 kHz and 48 kHz
audio, and `sample_steps` is a request option with the voice's default."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.daemon_proc import Daemon  # noqa: E402
from voxpipe.ipc.errors import VoxpipeError  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # random v3/v4 voices and a daemon of its own

ROOT = Path(__file__).resolve().parent.parent
TEXT = "你好，世界。"
RATES = {"gv3": 24000, "gv4": 48000}


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    voices = tmp_path_factory.mktemp("gsv-v3-voices")
    for name, version, extra in (("gv3", "v3", ()), ("gv4", "v4", ("--lora",)), ("gv2", "v2", ())):
        made = _cli("voice", "random", name, "--family", "gpt-sovits", "--version", version, *extra,
                    "-d", str(voices))
        assert made.returncode == 0, made.stderr
    with Daemon(tmp_path_factory.mktemp("gsv-v3-daemon"), workers=1, voices_dir=str(voices),
                preload=["gv3", "gv4"]) as d:
        yield d


@pytest.mark.parametrize("voice", ["gv3", "gv4"])
def test_say_writes_audio_at_the_voice_rate(daemon, tmp_path, voice):
    out = tmp_path / f"{voice}.wav"
    said = _cli("say", "--endpoint", daemon.endpoint, "--voice", voice, "--top-k", "5", "--seed", "3",
                "-o", str(out), TEXT)
    assert said.returncode == 0, said.stderr
    audio, rate = soundfile.read(str(out), dtype="int16")
    assert rate == RATES[voice]
    assert len(audio) > rate // 10 and np.abs(audio).max() > 100


def test_sample_steps_option(daemon):
    with daemon.client() as client:
        four = client.synthesize(TEXT, "gv4", top_k=1, seed=5, sample_steps=4)
        again = client.synthesize(TEXT, "gv4", top_k=1, seed=5, sample_steps=4)
        default = client.synthesize(TEXT, "gv4", top_k=1, seed=5)
        with pytest.raises(VoxpipeError, match="sample_steps"):
            client.synthesize(TEXT, "gv4", sample_steps=64)  # v4 takes 4-32
        with pytest.raises(VoxpipeError, match="sample_steps"):
            client.synthesize(TEXT, "gv2", sample_steps=8)  # not a v3/v4 voice
    assert np.array_equal(four.samples, again.samples)
    assert len(four.samples) == len(default.samples) and not np.array_equal(four.samples, default.samples)
