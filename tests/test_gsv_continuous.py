"""Continuous batching of the GPT-SoVITS semantic decoder: a request's tokens are the same
alone and inside a batch of other requests (other lengths, other voices, joining and
leaving at different steps), greedy and seeded; a removed request leaves at once and
frees its cache."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # GPT-SoVITS decodes, alone and batched

from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, DecoderFull, sequence_for  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, TextSegment, VoiceFiles  # noqa: E402
from voxpipe.stages.families.gpt_sovits.text import segments  # noqa: E402

TEXTS = ["你好。", "今天天气真不错，我们出去走走吧。", "Hello there, this is a longer English sentence for the test.",
         "我们一起说话吧！Hello."]
GREEDY = Sampling(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
SAMPLED = Sampling(top_k=15, top_p=0.9, temperature=0.9, repetition_penalty=1.35)


def model_segments(text: str, lang: str = "auto") -> list[TextSegment]:
    return [TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(text, lang)]


def load_random_voice(root: Path, name: str, seed: int, max_sec: float = 1.0) -> GsvModel:
    voice = write_random_gsv_voice(root, name, "v2", seed=seed, max_sec=max_sec)
    files = VoiceFiles(next(voice.glob("*.ckpt")), next(voice.glob("*.pth")), root / ".gsv-pretrained",
                       voice / "reference.wav")
    model = GsvModel(files)
    model.build_prompt(model_segments("你好，这是一段参考音频。", "zh"))
    return model


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gsv-cont")
    return load_random_voice(root, "a", 0), load_random_voice(root, "b", 1)


def _run(decoder: ContinuousDecoder, arrivals: dict[int, list]) -> dict:
    """Step the decoder; `arrivals[step]` sequences join before that step. -> key: tokens."""
    out, step = {}, 0
    while decoder.running or any(k >= step for k in arrivals):
        for seq in arrivals.get(step, []):
            decoder.add(seq)
        for event in decoder.step():
            if event.finished:
                out[event.seq.key] = (list(event.seq.tokens), event.seq.stopped_by_eos)
        step += 1
    return out


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "seeded"])
def test_tokens_equal_alone_and_in_batch(voices, sampling):
    a, b = voices
    cases = [(a if i % 2 == 0 else b, text, 20 + 9 * i, 100 + i) for i, text in enumerate(TEXTS)]

    def seq(i):
        model, text, early_stop, seed = cases[i]
        return sequence_for(model, i, f"r{i}", model_segments(text), sampling, seed, early_stop)

    alone = {}
    for i, (model, text, early_stop, seed) in enumerate(cases):
        # The lone reference is the plain decoder, not the batched one.
        decoded = model.semantic_tokens(model_segments(text), sampling, seed, early_stop)
        alone[i] = (decoded.tokens, decoded.stopped_by_eos)
        assert _run(ContinuousDecoder(), {0: [seq(i)]})[i] == alone[i]
    # Arrivals at different steps, different voices, lengths and stopping points.
    decoder = ContinuousDecoder()
    batched = _run(decoder, {0: [seq(0), seq(1)], 3: [seq(2)], 7: [seq(3)]})
    assert batched == alone
    assert decoder.peak_batch == 4
    assert len({len(t) for t, _ in alone.values()}) > 1  # really different lengths


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_sampled_tokens_do_not_depend_on_the_batch_size_or_neighbours(voices, precision):
    """A sequence sampling from its own seeded generator draws the same tokens alone and
    in batches of 2, 8 and 16 beside other texts, voices and seeds."""
    from voxpipe.stages.families.gpt_sovits.decoder.int8 import int8_available

    if precision == "int8" and not int8_available():
        pytest.skip("no quantized backend for int8 products here")
    a, b = voices
    before = a.t2s.precision, b.t2s.precision
    a.t2s.precision = b.t2s.precision = precision
    try:
        target = lambda: sequence_for(a, "target", "r-target", model_segments(TEXTS[2]), SAMPLED, 7, 36)
        alone = _run(ContinuousDecoder(16), {0: [target()]})["target"]
        for size in (2, 8, 16):
            neighbours = [sequence_for(b if i % 2 else a, i, f"r{i}", model_segments(TEXTS[i % len(TEXTS)]), SAMPLED,
                                       1000 * size + i, 12 + 5 * i) for i in range(size - 1)]
            got = _run(ContinuousDecoder(16), {0: [target(), *neighbours]})
            assert got["target"] == alone, f"batch of {size}"
    finally:
        a.t2s.precision, b.t2s.precision = before


def test_removed_request_leaves_at_next_step_and_frees_its_cache(voices):
    a, b = voices
    decoder = ContinuousDecoder(max_sequences=3)
    keep = sequence_for(a, "keep", "r-keep", model_segments(TEXTS[1]), GREEDY, 1, 30)
    drop = [sequence_for(b, ("drop", i), "r-drop", model_segments(TEXTS[i]), GREEDY, 2, 30) for i in (0, 2)]
    for s in (keep, *drop):
        decoder.add(s)
    with pytest.raises(DecoderFull):
        decoder.add(sequence_for(a, "extra", "r-x", model_segments(TEXTS[0]), GREEDY, 3, 30))
    for _ in range(3):
        decoder.step()
    assert all(s.cache_bytes() > 0 for s in drop)
    tokens_before = [len(s.tokens) for s in drop]
    removed = decoder.remove("r-drop")
    assert {s.key for s in removed} == {("drop", 0), ("drop", 2)}
    assert all(s.cache_bytes() == 0 for s in drop)
    events = decoder.step()
    assert [e.seq.key for e in events] == ["keep"]
    assert [len(s.tokens) for s in drop] == tokens_before
    assert decoder.has_room()
    # The survivor's tokens are unaffected by its neighbours leaving.
    while decoder.running:
        decoder.step()
    assert keep.tokens == a.semantic_tokens(model_segments(TEXTS[1]), GREEDY, 1, 30).tokens


def test_voices_of_one_pretrained_folder_hold_its_models_once(voices):
    """BERT, HuBERT and the speaker model are loaded once per worker (per pretrained folder,
    device and precision), whatever the number of voices using them."""
    a, b = voices
    assert a.files.pretrained == b.files.pretrained and a.t2s is not b.t2s
    assert a.shared is b.shared
    assert a.shared.get_bert()[1] is b.shared.get_bert()[1]
    assert a.shared.get_hubert() is b.shared.get_hubert()
