"""Word timings below the daemon: the text's words matched to espeak's word groups, the
engines' per-phoneme durations, the runners' pieces and the merger's placement across
crossfades."""
from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest

from voxpipe.ipc.messages import Chunk, FamilyInputs, WordSpan
from voxpipe.stages.engines.base import EngineSettings
from voxpipe.stages.families.base import RunnerSettings
from voxpipe.stages.families.gpt_sovits.words import gsv_chunk_words, gsv_words
from voxpipe.stages.families.piper.family import PiperFamily, piper_item
from voxpipe.stages.families.runners import BatchRunner
from voxpipe.stages.families.words import align_groups, chunk_word_spans, text_words, word_spans
from voxpipe.stages.merger.crossfade import CrossfadeJoiner
from voxpipe.stages.merger.stage import MergeState
from voxpipe.stages.voices import VoiceCatalog

TEXTS = ["Hello there, how are you?",
         "It is forty-two o'clock. Don't go to the U.S.A. today.",
         "I'm going to the well-known store of the Acme corp, then home -- quickly!",
         "Mr. Smith said: 'yes'; then he left with 3 cats."]


@pytest.fixture(scope="module")
def joe_frontend():
    spec = VoiceCatalog(None).get("joe")
    return PiperFamily().frontend(spec)


def _chunk(text: str, ids: list[int], extras: dict, seq: int = 0, count: int = 1, stream: bool = False) -> Chunk:
    options = {"noise_scale": 0.0, "length_scale": 1.0, "noise_w": 0.0, "speaker_id": 0}
    return Chunk("r", seq, count, "v", "piper", text, FamilyInputs(ids, options, extras), None, stream, 1e12)


def test_text_words_strip_punctuation_and_skip_symbols():
    assert text_words("Hello, world -- it's 3 o'clock!") == ["Hello", "world", "it's", "3", "o'clock"]
    assert text_words(" -- ... ") == []


def test_alignment_shares_a_joined_group_and_spans_a_split_word():
    # "of the" spoken as one group; "forty-two" as two.
    groups = align_groups([2, 2, 6, 3], [4, 4, 2, 3])
    assert groups[0] == (0, 2, 0, 1)
    assert groups[1] == (2, 3, 1, 3)
    assert groups[-1] == (3, 4, 3, 4)


@pytest.mark.parametrize("text", TEXTS)
def test_every_word_gets_ids_in_order(joe_frontend, text):
    ids, extras = joe_frontend.inputs(text)
    words = extras["words"]
    assert [w[0] for w in words] == text_words(text)
    last = 0
    for _, first, end in words:
        assert last <= first <= end <= len(ids)
        last = end
    assert sum(1 for _, a, b in words if b > a) >= len(words) - 1  # at most a stray word is unspoken


def test_word_spans_from_durations_and_estimates_stay_inside():
    words = [["a", 1, 3], ["b", 3, 6], ["c", 6, 6]]
    durations = np.array([10, 20, 30, 0, 5, 5, 30], dtype=float)
    spans = word_spans(words, durations, 7, 100)
    assert [(s.start, s.end) for s in spans] == [(10, 60), (60, 70), (70, 70)]
    estimated = word_spans(words, None, 7, 700)
    assert [(s.start, s.end) for s in estimated] == [(100, 300), (300, 600), (600, 600)]


def _check_spans(spans: list[WordSpan], total: int) -> None:
    last = 0
    for span in spans:
        assert last <= span.start <= span.end <= total
        last = span.end


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["onnx", "torch"])
def test_engines_give_durations_that_add_up_to_the_audio(tmp_path, engine_name):
    """Real timings on both engines (the onnx one from its split graph), whole and streamed,
    and the runner's pieces carry the words inside the chunk's audio."""
    if engine_name == "torch":
        pytest.importorskip("torch")
    from voxpipe.stages.families.piper.engines import create_engine
    from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice

    write_random_piper_voice(tmp_path / "voices", "tiny", seed=5, sample_rate=16000)
    spec = VoiceCatalog(tmp_path / "voices").get("tiny")
    options = {"busy_dir": str(tmp_path / "busy"), "parts_cache_dir": str(tmp_path / "parts")}
    engine = create_engine(engine_name, EngineSettings(options=options))
    voice = engine.load_voice(spec)
    frontend = PiperFamily().frontend(spec)
    text = TEXTS[2]
    ids, extras = frontend.inputs(text)
    chunk = _chunk(text, ids, extras)
    ((audio, durations),) = engine.synthesize_timed(voice, [piper_item(chunk)])
    assert durations is not None and len(durations) == len(ids)
    assert float(durations.sum()) == pytest.approx(len(audio))
    streamed = list(engine.synthesize_stream_timed(voice, piper_item(chunk), 4))
    assert streamed[0].per_id is not None and all(p.per_id is None for p in streamed[1:])
    assert [p.last for p in streamed] == [False] * (len(streamed) - 1) + [True]
    np.testing.assert_allclose(streamed[0].per_id, durations)

    for stream_frames in (0, 4):
        runner = BatchRunner(engine, RunnerSettings(stream_frames=stream_frames), piper_item, chunk_word_spans)
        runner.admit(voice, _chunk(text, ids, extras, stream=bool(stream_frames)))
        pieces = []
        while len(runner):
            pieces += runner.step(0.0).pieces
        total = sum(len(p.audio) for p in pieces)
        words = [w for p in pieces for w in p.words]
        assert [w.text for w in words] == text_words(text)
        _check_spans(words, total)
        assert words[0].start > 0 or words[-1].end < total or total == 0  # real durations, not a flat spread
        # The engine marks its last window: the chunk ends with audio, not an empty part after it.
        assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
        assert all(len(p.audio) for p in pieces) and (len(pieces) > 1) == bool(stream_frames)

    class Unmarked(type(engine)):  # type: ignore[misc]
        """Streams the same windows without saying which is the last."""

        def synthesize_stream_timed(self, voice, item, window_frames):
            for piece in super().synthesize_stream_timed(voice, item, window_frames):
                yield dataclasses.replace(piece, last=False)

    unmarked = Unmarked(EngineSettings(options=options))
    runner = BatchRunner(unmarked, RunnerSettings(stream_frames=4), piper_item, chunk_word_spans)
    runner.admit(unmarked.load_voice(spec), _chunk(text, ids, extras, stream=True))
    pieces = []
    while len(runner):
        pieces += runner.step(0.0).pieces
    assert pieces[-1].last and not len(pieces[-1].audio)  # the stream's end ends the chunk
    assert not any(p.last for p in pieces[:-1])
    assert [w.text for p in pieces for w in p.words] == text_words(text)


def test_merger_places_words_across_crossfades():
    joiner = CrossfadeJoiner(100)
    state = MergeState(3, 16000, True, 1e12, joiner)
    chunks = [np.ones(1000, np.float32), np.ones(800, np.float32), np.ones(500, np.float32)]
    spans = [[WordSpan("a", 0, 400), WordSpan("b", 400, 1000)],
             [WordSpan("c", 0, 300), WordSpan("d", 300, 800)],
             [WordSpan("e", 50, 450)]]
    out = 0
    for seq, (audio, words) in enumerate(zip(chunks, spans)):
        out += len(joiner.push(audio, crossfade=seq > 0, final=seq == 2))
        state.chunk_start = joiner.last_start
        state.place_words(words)
    assert out == joiner.length == 1000 + 800 + 500 - 2 * 100
    placed = state.take_words(None)
    # Chunk 1 starts at 900 (its first 100 samples fade over chunk 0's last), so "c" is moved
    # to start where "b" ends; chunk 2 starts at 1600, its "e" at 1650 after "d" ends at 1700.
    assert [(w.text, w.start, w.end) for w in placed] == [
        ("a", 0, 400), ("b", 400, 1000), ("c", 1000, 1200), ("d", 1200, 1700), ("e", 1700, 2050)]
    _check_spans(placed, out)


def test_gpt_sovits_words_share_the_chunk():
    assert gsv_words("你好，世界！ Hello there, U.S.A.") == ["你", "好", "世", "界", "Hello", "there", "U.S.A"]
    chunk = Chunk("r", 0, 1, "g", "gpt-sovits", "Hello there, my friend.", FamilyInputs([1, 2], {}, {}), None,
                  False, 1e12)
    spans = gsv_chunk_words(chunk, 32000)
    assert [s.text for s in spans] == ["Hello", "there", "my", "friend"]
    assert spans[0].start == 0 and spans[-1].end == 32000
    _check_spans(spans, 32000)
