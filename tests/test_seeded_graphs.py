"""Piper's one-piece and int8 graphs take their noise from the chunk's seed
(stages/families/piper/engines/onnx_seeded.py): a seed replays them exactly, and they
render what the split graphs render from the same seed."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the split graphs (compared against) are exported with torch
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.engines.signal_quality import snr_db  # noqa: E402
from voxpipe.stages.families.piper.engines import create_engine, onnx_seeded  # noqa: E402
from voxpipe.stages.families.piper.item import SynthesisItem  # noqa: E402
from voxpipe.stages.families.piper.phonemize import Phonemizer  # noqa: E402
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

pytestmark = pytest.mark.slow

TEXT = "The lighthouse keeper climbed the winding stairs at dusk."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded")
    write_random_piper_voice(root / "voices", "tiny", seed=5, num_speakers=2, sample_rate=22050)
    spec = VoiceCatalog(root / "voices").get("tiny")
    options = {"max_threads": 1, "loudness": False, "busy_dir": str(root / "busy"),
               "parts_cache_dir": str(root / "parts"), "int8_cache_dir": str(root / "int8")}
    return spec, options, root


def _engine(options: dict, precision: str = "fp32", **more):
    return create_engine("onnx", EngineSettings(precision=precision, options={**options, **more}))


def _item(spec, seed: int | None, sid: int = 1) -> SynthesisItem:
    return SynthesisItem(Phonemizer(spec).text_to_ids(TEXT), 0.667, 1.0, 0.8, speaker_id=sid, seed=seed)


def test_the_rewritten_graph_draws_no_noise_of_its_own(tiny):
    spec, options, root = tiny
    path = onnx_seeded.seeded_graph(spec.model_path, spec.name, root / "parts")
    shipped, seeded = onnx.load(str(spec.model_path)), onnx.load(str(path))
    assert {n.op_type for n in shipped.graph.node} & set(onnx_seeded.RANDOM_OPS)  # guards the check below
    assert not {n.op_type for n in seeded.graph.node} & set(onnx_seeded.RANDOM_OPS)
    assert [i.name for i in seeded.graph.input] == ["input", "input_lengths", "scales", "dp_noise", "z_noise", "sid"]
    assert [o.name for o in seeded.graph.output] == ["output", "frames"]
    stamp = path.stat().st_mtime_ns
    assert onnx_seeded.seeded_graph(spec.model_path, spec.name, root / "parts") == path
    assert path.stat().st_mtime_ns == stamp  # cached, not rewritten
    assert not list((root / "parts").glob(".*.onnx")), "a temporary file was left behind"


def test_a_graph_without_noise_is_refused(tiny):
    spec, _, _ = tiny
    proto = onnx.load(str(spec.model_path))
    onnx_seeded.seed_inputs(proto)
    with pytest.raises(onnx_seeded.SeedingError, match="found 0"):
        onnx_seeded.seed_inputs(proto)


def test_one_piece_graph_replays_a_seed_and_matches_the_split_graphs(tiny):
    spec, options, _ = tiny
    whole_engine, split_engine = _engine(options, split=False), _engine(options)
    whole, split = whole_engine.load_voice(spec), split_engine.load_voice(spec)
    assert not whole.model.split and whole.model.whole.seeded and split.model.split
    item = _item(spec, seed=11)
    first, again = (whole_engine.synthesize(whole, [item])[0] for _ in range(2))
    assert np.array_equal(first, again)
    other = whole_engine.synthesize(whole, [_item(spec, seed=12)])[0]
    assert len(other) != len(first) or not np.allclose(other, first, atol=1e-3)  # the seed reaches the graph
    reference = split_engine.synthesize(split, [item])[0]
    assert reference.shape == first.shape
    assert np.abs(reference - first).max() <= 1e-4
    # Streamed and whole renders of one seeded chunk agree on both graph kinds.
    for engine, voice in ((whole_engine, whole), (split_engine, split)):
        streamed = np.concatenate(list(engine.synthesize_stream(voice, item, 7)))
        assert streamed.shape == reference.shape and np.abs(streamed - reference).max() <= 1e-4


def test_a_prior_wider_than_the_first_draw_is_drawn_again(tiny, monkeypatch):
    spec, options, _ = tiny
    from voxpipe.stages.families.piper.engines import onnx_engine

    engine = _engine(options, split=False)
    voice = engine.load_voice(spec)
    item = _item(spec, seed=3)
    reference = engine.synthesize(voice, [item])[0]
    monkeypatch.setattr(onnx_engine, "_noise_frames", lambda phonemes, length_scale: 2)
    assert np.array_equal(engine.synthesize(voice, [item])[0], reference)


def test_int8_replays_a_seed_bitwise(tiny, caplog):
    spec, options, _ = tiny
    engine = _engine(options, "int8", int8_method="dynamic")
    with caplog.at_level(logging.ERROR):
        voice = engine.load_voice(spec)
    (model,) = Path(options["int8_cache_dir"]).glob("*-dynamic-*.onnx")
    assert not {n.op_type for n in onnx.load(str(model)).graph.node} & set(onnx_seeded.RANDOM_OPS)
    item = _item(spec, seed=11)
    first, again = (engine.synthesize(voice, [item])[0] for _ in range(2))
    assert np.array_equal(first, again)
    float_engine = _engine(options, split=False)
    reference = float_engine.synthesize(float_engine.load_voice(spec), [item])[0]
    assert first.shape == reference.shape  # the durations are float's: only the vocoder is int8
    assert snr_db(reference, first) > 0
