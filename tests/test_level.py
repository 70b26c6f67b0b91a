"""One level for a Piper voice whatever engine speaks it: the gain and the soft limiter are
applied by the Piper runner to every piece an engine hands back (whole chunks and streamed
windows), and the gain is measured once per model file, then read from a cache."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("torch")  # the torch engine, and the onnx engine's split graphs
pytest.importorskip("onnxruntime")

from voxpipe.config import Config  # noqa: E402
from voxpipe.ipc.messages import Chunk, SynthesisOptions, SynthesisRequest  # noqa: E402
from voxpipe.stages import families  # noqa: E402
from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.families.base import RunnerSettings  # noqa: E402
from voxpipe.stages.families.piper import loudness  # noqa: E402
from voxpipe.stages.families.piper.engines import create_engine  # noqa: E402
from voxpipe.stages.frontend.planner import Planner  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

TEXT = "The lighthouse at the end of the pier was painted white. Storms rolled in from the sea!"


def quiet_chunks(stream: bool) -> list[Chunk]:
    """joe's chunks of TEXT with no noise (the engines draw noise differently)."""
    config = Config()
    planner = Planner(config, VoiceCatalog(config.voices_path()))
    options = SynthesisOptions(params={"noise_scale": 0.0, "noise_w": 0.0}, first_chunk=False)
    return planner.plan(SynthesisRequest("r", TEXT, "joe", stream, options), time.monotonic() + 600).chunks


def speak(engine_name: str, tmp_path, stream: bool, **options) -> tuple[list[np.ndarray], object]:
    """Each chunk's audio as the Piper runner hands it to the worker, and the loaded voice."""
    settings = EngineSettings(options={"busy_dir": str(tmp_path / "busy"), "parts_cache_dir": str(tmp_path / "parts"),
                                       "level_cache_dir": str(tmp_path / "level"), **options})
    engine = create_engine(engine_name, settings)
    runner = families.get("piper").runner(engine, RunnerSettings(stream_frames=16 if stream else 0))
    chunks = quiet_chunks(stream)
    voice = engine.load_voice(VoiceCatalog(Config().voices_path()).get("joe"))
    runner.prepare(voice)
    audio: dict[int, list[np.ndarray]] = {c.seq: [] for c in chunks}
    parts = 0
    for chunk in chunks:
        runner.admit(voice, chunk)
    while len(runner):
        for piece in runner.step(time.monotonic()).pieces:
            audio[piece.chunk.seq].append(piece.audio)
            parts += 1
    assert parts > len(chunks) if stream else parts == len(chunks)  # streamed: in windows
    return [np.concatenate(audio[c.seq]) for c in chunks], voice


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_torch_and_onnx_speak_a_voice_at_one_level(tmp_path, stream):
    onnx, _ = speak("onnx", tmp_path, stream)
    torch_audio, _ = speak("torch", tmp_path, stream)
    for a, b in zip(onnx, torch_audio):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 2e-3


@pytest.mark.slow
def test_the_level_is_the_runners_and_the_gain_comes_from_the_cache(tmp_path):
    raw, _ = speak("onnx", tmp_path / "raw", False, loudness=False)
    levelled, voice = speak("onnx", tmp_path, False)
    cached = list((tmp_path / "level").glob("*.json"))
    assert len(cached) == 1
    gain = json.loads(cached[0].read_text())["gain"]
    assert gain > 1.0  # joe is quieter than Piper's level
    for r, out in zip(raw, levelled):
        assert np.array_equal(out, loudness.apply_gain(r, gain))
    # The next start reads the cached gain instead of measuring it (a planted value shows it).
    cached[0].write_text(json.dumps({"gain": 2.0, "format": loudness.LEVEL_FORMAT}))
    again = loudness.VoiceLevels(create_engine("onnx", EngineSettings(options={"busy_dir": str(tmp_path / "busy")})),
                                 cache_dir=tmp_path / "level")
    assert again.prepare(voice) == 2.0
