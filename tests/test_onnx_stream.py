"""The onnxruntime engine's split graph: windowed vocoder, threads that follow the busy
workers; and the per-voice output level (stages/families/piper/loudness.py) on it."""
from __future__ import annotations

import dataclasses
import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # exporting the split graphs needs torch and onnx
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from voxpipe.stages.families.piper import loudness  # noqa: E402
from voxpipe.stages.families.piper.engines import create_engine  # noqa: E402
from voxpipe.stages.engines.base import EngineError, EngineSettings  # noqa: E402
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.engines.busy_board import BusyBoard, threads_for  # noqa: E402
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice  # noqa: E402
from voxpipe.stages.families.piper.phonemize import Phonemizer  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR as BENCH  # noqa: E402  (the bench texts, in the package)
SENTENCE = "The lighthouse at the end of the northern pier was painted white, and its lens turned all night."


def _engine(tmp: Path, **options) -> object:
    return create_engine("onnx", EngineSettings(options={"busy_dir": str(tmp / "busy"), **options}))


@pytest.fixture(scope="module")
def joe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("joe")
    spec = VoiceCatalog(None).get("joe")
    engine = _engine(tmp)
    return engine, engine.load_voice(spec), Phonemizer(spec)


def _item(phonemizer: Phonemizer, text: str = SENTENCE, noise: float = 0.0, sid: int = 0) -> SynthesisItem:
    return SynthesisItem(phonemizer.text_to_ids(text), noise, 1.0, noise, speaker_id=sid)


@pytest.mark.slow
@pytest.mark.parametrize("window,leads", [(1, False), (16, False), (64, False), (10_000, False),
                                          (1, True), (16, True), (64, True)])
def test_windows_join_to_the_whole_decode(joe, window, leads):
    """A chunk's first window renders beside the rest's flow (on the engine's lane thread);
    the first of several chunks renders them one after the other: both join exactly."""
    engine, voice, phonemizer = joe
    assert voice.model.split  # the default: acoustic part + vocoder
    item = dataclasses.replace(_item(phonemizer), leads_siblings=leads)
    whole = engine.synthesize(voice, [item])[0]
    pieces = list(engine.synthesize_stream(voice, item, window))
    hop = voice.model.hop
    assert len(pieces[0]) == min(window * hop, len(whole))  # first audio after one window
    joined = np.concatenate(pieces)
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() <= 1e-4


@pytest.mark.parametrize("start,end", [(0, 10_000), (32, 10_000), (0, 32), (40, 300)])
def test_rows_side_by_side_join_to_one_call(joe, start, end):
    """A wide window on two threads goes as two rows of the 2-D vocoder graph side by side,
    a narrow one as the 1-D graph on both; either equals the window on one thread."""
    engine, voice, phonemizer = joe
    item = _item(phonemizer)
    z_p, total, _ = engine._prior(voice, item, 1)
    z = engine._flow(voice, z_p, 0, total, item, 1)
    end = min(end, total)
    one = engine._vocode(voice, z, 0, total, start, end, item, 1)
    two = engine._vocode(voice, z, 0, total, start, end, item, 2)
    assert len(one) == len(two) == (end - start) * voice.model.hop
    np.testing.assert_allclose(two, one, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["radius", "flow_radius"])
def test_too_little_context_would_show(joe, context):
    # Guards the test above: windows whose vocoder (radius) or flow (flow_radius) runs
    # without its context do differ at the seams.
    engine, voice, phonemizer = joe
    item = _item(phonemizer)
    whole = engine.synthesize(voice, [item])[0]
    kept = getattr(voice.model, context)
    setattr(voice.model, context, 0)
    try:
        joined = np.concatenate(list(engine.synthesize_stream(voice, item, 16)))
    finally:
        setattr(voice.model, context, kept)
    assert np.abs(joined - whole).max() > 1e-3


def test_flow_radius_is_exactly_what_reaches_a_frame(tmp_path):
    # A change to one frame of the flow's input reaches flow_radius frames either side, no further.
    import torch

    from voxpipe.stages.engines.receptive_field import flow_radius
    from voxpipe.stages.families.piper.vits.load import load_piper_onnx

    model = load_piper_onnx(write_random_piper_voice(tmp_path, "tiny", seed=5), "tiny", 1).eval()
    with torch.no_grad():  # every weight non-zero (a random voice keeps some couplings at identity)
        for param in model.flow.parameters():
            param.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(param.numel()))
    radius = flow_radius(model.flow)
    frames, at = 4 * radius + 9, 2 * radius
    flow = model.flow.double()  # far reaches are products of many small weights: keep every bit
    z_p = torch.randn(1, model.cfg.inter_channels, frames, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    mask = torch.ones(1, 1, frames, dtype=torch.float64)
    with torch.no_grad():
        base = flow(z_p, mask)
        bumped = z_p.clone()
        bumped[:, :, at] += 1.0
        changed = (flow(bumped, mask) - base).abs().amax(dim=1)[0] > 0
    reached = torch.nonzero(changed).flatten()
    assert int(reached.min()) == at - radius and int(reached.max()) == at + radius


@pytest.mark.slow
def test_windows_grow_and_join_with_noise_on(joe):
    # A small first window, then wider ones from one flow call over the rest.
    from voxpipe.stages.families.piper.engines.windows import stream_windows

    engine, voice, phonemizer = joe
    item = dataclasses.replace(_item(phonemizer, noise=0.667), seed=11)
    whole = engine.synthesize(voice, [item])[0]
    pieces = list(engine.synthesize_stream(voice, item, 16))
    hop = voice.model.hop
    plan = stream_windows(len(whole) // hop, 16)
    assert len(plan) >= 3 and [len(p) // hop for p in pieces] == [e - s for s, e in plan]
    assert np.abs(np.concatenate(pieces) - whole).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.reference
def test_split_graph_matches_the_voice_as_shipped(tmp_path):
    spec = VoiceCatalog(None).get("joe")
    engine = _engine(tmp_path)
    voice = engine.load_voice(spec)
    ids = Phonemizer(spec).text_to_ids(SENTENCE)
    shipped = ort.InferenceSession(str(spec.model_path), providers=["CPUExecutionProvider"])
    reference = shipped.run(None, {"input": ids[None].astype(np.int64), "input_lengths": np.array([len(ids)]),
                                   "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)})[0].reshape(-1)
    audio = engine.synthesize(voice, [SynthesisItem(ids, 0.0, 1.0, 0.0)])[0]
    # the engine gives the model's own level (the gain is the pipeline's)
    assert audio.shape == reference.shape
    assert np.abs(audio - reference).max() <= 1e-3


@pytest.mark.slow
def test_stream_with_speakers_and_noise(tmp_path):
    write_random_piper_voice(tmp_path / "voices", "tiny", seed=3, num_speakers=3, sample_rate=22050)
    spec = VoiceCatalog(tmp_path / "voices").get("tiny")
    engine = _engine(tmp_path, parts_cache_dir=str(tmp_path / "parts"))
    voice = engine.load_voice(spec)
    phonemizer = Phonemizer(spec)
    item = _item(phonemizer, sid=2)
    whole = engine.synthesize(voice, [item])[0]
    assert np.abs(np.concatenate(list(engine.synthesize_stream(voice, item, 7))) - whole).max() <= 1e-4
    other = engine.synthesize(voice, [_item(phonemizer, sid=1)])[0]
    assert not np.allclose(other[:len(whole)], whole[:len(other)])  # the speaker id reaches the graph
    noisy = list(engine.synthesize_stream(voice, _item(phonemizer, noise=0.667, sid=2), 7))
    assert len(noisy) > 1 and all(np.isfinite(p).all() for p in noisy)
    with pytest.raises(EngineError, match="tiny"):
        list(engine.synthesize_stream(voice, _item(phonemizer, sid=9), 7))  # no such speaker
    with pytest.raises(EngineError, match="window"):
        list(engine.synthesize_stream(voice, item, 0))


@pytest.mark.slow
def test_one_piece_graph_when_split_is_off(joe, tmp_path):
    spec = VoiceCatalog(None).get("joe")
    engine = _engine(tmp_path, split=False, parts_cache_dir=str(tmp_path / "parts"))
    voice = engine.load_voice(spec)
    assert not voice.model.split and voice.model.whole.seeded
    pieces = list(engine.synthesize_stream(voice, _item(Phonemizer(spec)), 16))
    assert len(pieces) == 1 and len(pieces[0]) > 0
    # Noise on, one seed: Piper's own graph, its random ops rewritten into inputs, renders
    # what the split graphs (exported from the model as this project builds it) render.
    split_engine, split_voice, phonemizer = joe
    item = SynthesisItem(phonemizer.text_to_ids(SENTENCE), 0.667, 1.0, 0.8, seed=11)
    whole = engine.synthesize(voice, [item])[0]
    assert np.array_equal(engine.synthesize(voice, [item])[0], whole)
    split = split_engine.synthesize(split_voice, [item])[0]
    assert split.shape == whole.shape and np.abs(split - whole).max() <= 1e-3
    streamed = np.concatenate(list(split_engine.synthesize_stream(split_voice, item, 16)))
    assert streamed.shape == whole.shape and np.abs(streamed - whole).max() <= 1e-3


# ---------------------------------------------------------------- threads


def test_busy_board_counts_processes_in_a_model_call(tmp_path):
    board = BusyBoard(tmp_path)
    assert board.others_busy() == 0
    peer = os.open(tmp_path / "1.busy", os.O_RDWR | os.O_CREAT)  # pid 1 lives: its file stays
    try:
        assert board.others_busy() == 0  # idle peer
        fcntl.flock(peer, fcntl.LOCK_EX)
        assert board.others_busy() == 1
        with board.busy():  # this process's own lock is not counted
            assert board.others_busy() == 1
        fcntl.flock(peer, fcntl.LOCK_UN)
        assert board.others_busy() == 0
    finally:
        os.close(peer)
    dead = tmp_path / "999999999.busy"  # beyond pid_max: a process that is gone
    dead.touch()
    board.others_busy()
    assert not dead.exists() and (tmp_path / "1.busy").exists()
    board.close()
    assert not (tmp_path / board.name).exists()


@pytest.mark.parametrize("others, expected", [(0, 2), (1, 1), (5, 1)])
def test_threads_follow_the_busy_workers(others, expected):
    assert threads_for(others, base=1, most=2, cores=2) == expected


def test_threads_on_a_bigger_machine():
    assert threads_for(0, base=2, most=8, cores=8) == 8
    assert threads_for(2, base=2, most=8, cores=8) == 4
    assert threads_for(9, base=2, most=8, cores=8) == 2


# ---------------------------------------------------------------- level


def _bench_sentences() -> list[str]:
    rows = (BENCH / "texts_en.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in rows if line and not line.startswith("#")]


@pytest.mark.slow
@pytest.mark.reference
def test_level_within_one_db_of_pipers(joe, tmp_path):
    """Piper scales each sentence to full-scale peaks; a voice's one gain lands within 1 dB
    of that level over the benchmark sentences."""
    from piper import PiperVoice, SynthesisConfig

    engine, voice, phonemizer = joe
    spec = voice.spec
    levels = loudness.VoiceLevels(engine, cache_dir=tmp_path / "level")
    piper = PiperVoice.load(str(spec.model_path), config_path=str(spec.files[1]))
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    ours, theirs, raw = [], [], []
    for text in _bench_sentences():
        raw.append(engine.synthesize(voice, [_item(phonemizer, text)])[0])
        ours.append(levels.apply(voice, raw[-1]))
        theirs.extend(chunk.audio_float_array for chunk in piper.synthesize(text, quiet))
    reference = loudness.rms_dbfs(np.concatenate(theirs))
    assert abs(loudness.rms_dbfs(np.concatenate(ours)) - reference) <= 1.0
    assert loudness.rms_dbfs(np.concatenate(raw)) < reference - 2.0  # guards: without the gain it is not
    assert max(np.abs(a).max() for a in ours) <= 1.0


@pytest.mark.slow
def test_gain_is_the_same_in_every_worker(joe, tmp_path):
    engine, voice, _ = joe
    again = _engine(tmp_path)
    first = loudness.VoiceLevels(engine, cache_dir=tmp_path / "a").prepare(voice)
    second = loudness.VoiceLevels(again, cache_dir=tmp_path / "b").prepare(again.load_voice(voice.spec))
    assert second == pytest.approx(first, rel=1e-6) and first > 1.0


def test_limiter_is_pointwise_and_bounded():
    x = np.linspace(-3, 3, 601, dtype=np.float32)
    y = loudness.apply_gain(x, 1.0)
    assert np.abs(y).max() <= 1.0 and np.all(np.diff(y) >= 0)  # bounded, and keeps the order
    near = np.abs(x) <= 1.2
    assert np.all(np.diff(y[near]) > 0) and np.abs(y[near]).max() < 1.0  # smooth, not clipped
    small = np.abs(x) <= loudness.KNEE
    assert np.array_equal(y[small], x[small])
    halves = np.concatenate([loudness.apply_gain(x[:300], 2.0), loudness.apply_gain(x[300:], 2.0)])
    assert np.array_equal(halves, loudness.apply_gain(x, 2.0))


def test_silent_reference_is_a_level_error():
    with pytest.raises(loudness.LevelError):
        loudness.peak_gain([np.zeros(100, np.float32), np.zeros(0, np.float32)])
    assert loudness.peak_gain([np.full(10, 0.5, np.float32), np.zeros(5, np.float32)]) == pytest.approx(2.0)
    # Two sentences of equal energy, one twice as loud at its peak: the mean of their gains squared.
    a, b = np.full(40, 0.5, np.float32), np.r_[np.full(10, 0.5), np.full(30, 0.2)].astype(np.float32) * 2
    gain = loudness.peak_gain([a, b])
    assert gain == pytest.approx(np.sqrt(((a ** 2).sum() * 4 + (b ** 2).sum()) / ((a ** 2).sum() + (b ** 2).sum())))


# ---------------------------------------------------------------- spinning threads


class _CountingSession:
    """An onnxruntime session that counts its calls (the real session runs them)."""

    def __init__(self, session) -> None:
        self.session, self.calls = session, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_only_a_one_chunk_request_spins_its_threads_and_renders_the_same(tmp_path):
    """Several-thread sessions come twice: threads that sleep between operators, and
    threads that spin (stopped at the end of each call). A request that is one chunk
    takes the spinning ones; a chunk with siblings the sleeping ones; audio is equal."""
    spec = VoiceCatalog(None).get("joe")
    engine = _engine(tmp_path, max_threads=2)
    if engine.cores.counts() != [1, 2]:
        pytest.skip("needs two usable cores")
    voice = engine.load_voice(spec)
    graphs = [voice.model.prior, voice.model.flow, voice.model.vocoder]
    for graph in graphs:
        assert set(graph.spinning) == {2} and set(graph.sessions) == {1, 2}
        assert graph.spinning[2].get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
        assert graph.sessions[2].get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        graph.spinning[2] = _CountingSession(graph.spinning[2])
        graph.sessions[2] = _CountingSession(graph.sessions[2])
    ids = Phonemizer(spec).text_to_ids("Hello there.")
    alone = SynthesisItem(ids, 0.667, 1.0, 0.8, seed=11, whole_request=True)
    sibling = dataclasses.replace(alone, whole_request=False)
    spun = engine.synthesize(voice, [alone])[0]
    assert [g.spinning[2].calls for g in graphs] == [1, 1, 1]
    assert [g.sessions[2].calls for g in graphs] == [0, 0, 0]
    slept = engine.synthesize(voice, [sibling])[0]
    assert [g.sessions[2].calls for g in graphs] == [1, 1, 1]
    assert [g.spinning[2].calls for g in graphs] == [1, 1, 1]
    assert spun.shape == slept.shape and np.abs(spun - slept).max() <= 1e-4


def test_a_chunk_is_a_whole_request_only_when_its_plan_is_one_chunk():
    from voxpipe.ipc.messages import Chunk, FamilyInputs
    from voxpipe.stages.families.piper.family import piper_item

    options = {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8, "speaker_id": 0}

    def chunk(count: int) -> Chunk:
        return Chunk("r", 0, count, "joe", "piper", "Hi.", FamilyInputs([1, 0, 2], options), 5, False, 1e9)

    assert piper_item(chunk(1)).whole_request
    assert not piper_item(chunk(3)).whole_request
    assert not piper_item(chunk(0)).whole_request  # the plan is still being made: siblings may come
    # Only the first of several leads its siblings (its first audio is the request's).
    assert piper_item(chunk(3)).leads_siblings and piper_item(chunk(0)).leads_siblings
    assert not piper_item(chunk(1)).leads_siblings
    second = dataclasses.replace(chunk(3), seq=1)
    assert not piper_item(second).leads_siblings and not piper_item(second).whole_request
