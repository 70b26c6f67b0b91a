"""The batched CPU path (static cache, one shared product per layer) against a lone
decode, on every text of the serving benchmark decoded together at its token limits:
greedy tokens equal, logits within 1e-3."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.test_gsv_continuous import GREEDY, _run, load_random_voice  # noqa: E402
from tests.test_gsv_static_decoder import _lone_logits, _static_logits  # noqa: E402
from tools.gsv_serve_bench import make_requests  # noqa: E402
from voxpipe.stages.engines.gpt_sovits.continuous import ContinuousDecoder, sequence_for  # noqa: E402
from voxpipe.stages.engines.gpt_sovits.static_decoder import StaticDecoder  # noqa: E402

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(2)
    return load_random_voice(tmp_path_factory.mktemp("gsv-eq"), "eq", 5, max_sec=30.0)


def test_batched_greedy_tokens_and_logits_equal_a_lone_decode(model):
    requests = make_requests(6)  # every bench text once
    seqs = [sequence_for(model, i, f"r{i}", r.segments, GREEDY, r.seed, r.max_tokens - 1)
            for i, r in enumerate(requests)]
    lone = [model.semantic_tokens(r.segments, GREEDY, r.seed, r.max_tokens - 1).tokens for r in requests]
    assert [len(t) for t in lone] == [r.max_tokens for r in requests]  # no EOS: the bench's lengths
    decoder = ContinuousDecoder(len(seqs))
    for seq in seqs:
        decoder.add(seq)
    decoder.step()  # prefills (no text stops in its first step)
    assert sorted(s.slot for s in seqs) == list(range(len(seqs)))  # the static path, on the CPU
    batched = _run(decoder, {})
    assert decoder.peak_batch == len(seqs)
    assert [batched[i][0] for i in range(len(seqs))] == lone
    fresh = [sequence_for(model, i, f"r{i}", r.segments, GREEDY, r.seed, r.max_tokens - 1)
             for i, r in enumerate(requests)]
    together = _static_logits(StaticDecoder(model.t2s, len(fresh)), fresh, lone)
    for seq, tokens, got in zip(fresh, lone, together):
        ref = _lone_logits(model.t2s, seq, tokens)
        assert (got - ref).abs().max().item() < TOLERANCE
