"""The batched CPU path (static cache, one shared product per layer) against a lone
decode, on every text of the serving benchmark decoded together at its token limits:
greedy tokens equal, logits within 1e-3."""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # GPT-SoVITS decodes, alone and batched

from tests.test_gsv_continuous import GREEDY, _run, load_random_voice  # noqa: E402
from tests.test_gsv_static_decoder import _lone_logits, _static_logits  # noqa: E402
from voxpipe.bench.gsv_serve import make_requests  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, sequence_for  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.static_decoder import StaticDecoder  # noqa: E402

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(2)
    return load_random_voice(tmp_path_factory.mktemp("gsv-eq"), "eq", 5, max_sec=30.0)


def test_batched_greedy_tokens_and_logits_equal_a_lone_decode(model):
    requests = make_requests(6)  # every bench text once
    seqs = [sequence_for(model, i, f"r{i}", r.segments, GREEDY, r.seed, r.max_tokens)
            for i, r in enumerate(requests)]
    lone = [model.semantic_tokens(r.segments, GREEDY, r.seed, r.max_tokens).tokens for r in requests]
    assert [len(t) for t in lone] == [r.max_tokens for r in requests]  # no EOS: the bench's lengths
    decoder = ContinuousDecoder(len(seqs))
    for seq in seqs:
        decoder.add(seq)
    decoder.step()  # prefills (no text stops in its first step)
    assert sorted(s.slot for s in seqs) == list(range(len(seqs)))  # the static path, on the CPU
    batched = _run(decoder, {})
    assert decoder.peak_batch == len(seqs)
    assert [batched[i][0] for i in range(len(seqs))] == lone
    fresh = [sequence_for(model, i, f"r{i}", r.segments, GREEDY, r.seed, r.max_tokens)
             for i, r in enumerate(requests)]
    together = _static_logits(StaticDecoder(model.t2s, len(fresh)), fresh, lone)
    for seq, tokens, got in zip(fresh, lone, together):
        ref = _lone_logits(model.t2s, seq, tokens)
        assert (got - ref).abs().max().item() < TOLERANCE


def test_bert_of_texts_arriving_together_is_one_pass_equal_to_each_alone(model):
    from voxpipe.stages.families.gpt_sovits.models import features

    texts = [s for r in make_requests(6) for s in r.segments if s.lang == "zh"]
    tokenizer, bert = model.shared.get_bert()
    together = features.bert_features_batch(tokenizer, bert, [s.norm_text for s in texts], [s.word2ph for s in texts])
    for seg, got in zip(texts, together):
        alone = features.bert_features(tokenizer, bert, seg.norm_text, seg.word2ph)
        assert got.shape == alone.shape and (got - alone).abs().max().item() < 1e-4


def test_stream_runner_joins_chunks_admitted_together_after_one_bert_pass(model):
    """Chunks admitted between two steps wait for that step's BERT pass, then decode as a
    lone decode would (greedy), and the runner serves them to their last piece."""
    from types import SimpleNamespace

    from voxpipe.bench.gsv_serve import _item
    from voxpipe.stages.families.gpt_sovits.item import item_chunk
    from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

    requests = make_requests(3)
    voice = SimpleNamespace(model=model, spec=SimpleNamespace(name="eq", sample_rate=model.sample_rate))
    runner = GsvRunner(max_sequences=3)
    for i, r in enumerate(requests):
        item = dataclasses.replace(_item(r), top_k=1, repetition_penalty=1.0)  # greedy
        runner.admit(voice, item_chunk(item, f"r{i}"), max_tokens=30)
    assert len(runner) == 3 and not runner.has_room() and len(runner.decoder) == 0  # not joined yet
    seqs = {}
    last = set()
    while len(runner):
        result = runner.step()
        assert not result.failed
        seqs.update({k: s.seq for k, s in runner.streams.items()})
        last |= {p.chunk.request_id for p in result.pieces if p.last}
    assert last == {"r0", "r1", "r2"}
    for i, r in enumerate(requests):
        lone = model.semantic_tokens(r.segments, GREEDY, r.seed, 30).tokens
        assert seqs[(f"r{i}", 0)].tokens == lone
