"""The static-cache decoder of GPT-SoVITS (slots, a fixed-shape step, CUDA graphs per
bucket): on the CPU its step runs eagerly, forced on, on small random voices.

A request's tokens are the same alone and in any batch (greedy and seeded), and equal a
lone `Text2Semantic.decode`'s; its logits match the lone decode's within float rounding
(the masked attention over a whole slot sums in another order). Slots are freed when a
sequence leaves and reused; padding rows of a bucket change nothing. The CUDA tests
(graph replay, fp16 error) skip without a GPU.
"""
from __future__ import annotations

import copy
import dataclasses
import functools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # GPT-SoVITS decodes, alone and batched

from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, Sequence, sequence_for  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.slot_cache import SlotCache, keys_needed  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.static_decoder import StaticDecoder  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.static_step import FedToken, bucket_for, bucket_sizes  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.t2s import MAX_DECODE_STEPS, Text2Semantic  # noqa: E402
from tests.test_gsv_continuous import GREEDY, SAMPLED, TEXTS, _run, load_random_voice, model_segments  # noqa: E402

CAPACITY = 256  # columns per slot: enough for these prompts and early stops, small for CPU speed
# Static vs lone decode, fp32: the attention's sums run in another order (measured ~1.6e-6
# on logits of magnitude ~3.6).
LOGITS_TOLERANCE = 1e-4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gsv-static")
    return load_random_voice(root, "a", 0), load_random_voice(root, "b", 1)


def _static_decoder(max_sequences: int = 16) -> ContinuousDecoder:
    return ContinuousDecoder(max_sequences, static=True, static_capacity=CAPACITY)


def _cases(voices) -> list[tuple]:
    a, b = voices
    return [(a if i % 2 == 0 else b, text, 20 + 9 * i, 100 + i) for i, text in enumerate(TEXTS)]


@functools.cache
def _inputs_of(model, text: str) -> tuple:
    """(phones, bert, prompt tokens) of a text, computed once: BERT dominates the test time."""
    seq = sequence_for(model, None, "", model_segments(text), GREEDY, 0)
    return seq.phones, seq.bert, seq.prompt


def _seq(case: tuple, key, sampling) -> Sequence:
    model, text, early_stop, seed = case
    phones, bert, prompt = _inputs_of(model, text)
    return Sequence(key, f"r{key}", model.t2s, phones, bert, prompt, sampling, torch.Generator().manual_seed(seed),
                    early_stop)


def _lone(case: tuple, sampling) -> tuple[list[int], bool]:
    """A lone `Text2Semantic.decode` of the case: (tokens, stopped by EOS)."""
    model, text, early_stop, seed = case
    decoded = model.t2s.decode(*_inputs_of(model, text), sampling, torch.Generator().manual_seed(seed), early_stop)
    return decoded.tokens, decoded.stopped_by_eos


def _inputs(seq: Sequence) -> tuple:
    return seq.phones, seq.bert, seq.prompt, seq.early_stop


def _lone_logits(model: Text2Semantic, seq: Sequence, tokens: list[int]) -> torch.Tensor:
    """Logits of every step of a lone decode fed `tokens` (what `decode` computes)."""
    with torch.inference_mode():
        state = model.prefill_state(seq.phones, seq.bert, seq.prompt)
        h = model.run_layers(state.xy, state.caches, state.mask)
        out = [model.ar_predict_layer(h[:, -1])]
        for i, token in enumerate(tokens[:-1]):
            token_in = torch.tensor([[token]], device=seq.phones.device)
            h = model.ar_audio_embedding.word_embeddings(token_in) + state.positions[:, i:i + 1]
            h = model.run_layers(h, state.caches, None)
            out.append(model.ar_predict_layer(h[:, -1]))
    return torch.cat(out)


def _static_logits(pool: StaticDecoder, seqs: list[Sequence], tokens: list[list[int]]) -> list[torch.Tensor]:
    """Logits of every step of `seqs` decoded together in `pool`, each fed its `tokens`."""
    with torch.inference_mode():
        joined = [pool.join(s.phones, s.bert, s.prompt, s.early_stop) for s in seqs]
        outs = [[pool.prefill(slot, state)] for slot, state in joined]
        for i in range(max(map(len, tokens)) - 1):
            going = [j for j, t in enumerate(tokens) if i < len(t) - 1]
            rows = {joined[j][0]: FedToken(tokens[j][i], joined[j][1].y_len + i, joined[j][1].total + i)
                    for j in going}
            logits = pool.step(rows)
            for j in going:
                slot = joined[j][0]
                outs[j].append(logits[slot:slot + 1].clone())
    return [torch.cat(o) for o in outs]


def test_bucket_sizes_and_slot_bookkeeping():
    assert bucket_sizes(16) == (1, 2, 4, 8, 16)
    assert bucket_sizes(12) == (1, 2, 4, 8, 12)
    assert bucket_sizes(1) == (1,)
    assert [bucket_for(n, bucket_sizes(12)) for n in (1, 2, 3, 5, 9, 12)] == [1, 2, 4, 8, 12, 12]
    with pytest.raises(ValueError):
        bucket_for(13, bucket_sizes(12))
    assert keys_needed(100, 50) == 149  # 50 tokens kept, the last never fed back
    assert keys_needed(100, 10**6) == 100 + MAX_DECODE_STEPS - 2  # 1499 kept at the ceiling
    cache = SlotCache(n_layers=2, slots=3, capacity=8, hidden=4, heads=2, dtype=torch.float32,
                      device=torch.device("cpu"))
    assert [cache.acquire() for _ in range(3)] == [0, 1, 2]
    assert cache.acquire() is None
    cache.release(1)
    with pytest.raises(ValueError):
        cache.release(1)
    assert cache.acquire() == 1  # the lowest free slot, so steps stay in small buckets
    assert cache.in_use == 3
    assert (cache.capacity, cache.width) == (15, 16)  # widths are rounded up to 16 columns, the sink included
    assert cache.slot_bytes() == 2 * 2 * 16 * 4 * 4  # layers * (k, v) * width * hidden * fp32


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "seeded"])
def test_tokens_equal_alone_in_batch_and_lone_decode(voices, sampling):
    cases = _cases(voices)
    lone, alone = {}, {}
    for i, case in enumerate(cases):
        lone[i] = _lone(case, sampling)
        decoder = _static_decoder()
        seq = _seq(case, i, sampling)
        decoder.add(seq)
        decoder.step()  # a sequence gets its slot at its first step
        assert seq.slot == 0  # really on the static path
        alone[i] = _run(decoder, {})[i]
    # Two voices, arrivals at different steps, different lengths and stopping points.
    decoder = _static_decoder()
    batched = _run(decoder, {0: [_seq(cases[0], 0, sampling), _seq(cases[1], 1, sampling)],
                             3: [_seq(cases[2], 2, sampling)], 7: [_seq(cases[3], 3, sampling)]})
    assert batched == alone
    assert alone == lone
    assert decoder.peak_batch == 4
    assert len({len(t) for t, _ in alone.values()}) > 1


def test_logits_match_lone_decode_within_rounding(voices):
    a, _ = voices
    seqs = [_seq((a, text, 40, 0), i, GREEDY) for i, text in enumerate(TEXTS)]
    tokens = [_lone((a, text, 40, 0), GREEDY)[0] for text in TEXTS]
    static = _static_logits(StaticDecoder(a.t2s, 4, CAPACITY), seqs, tokens)
    for seq, toks, got in zip(seqs, tokens, static):
        ref = _lone_logits(a.t2s, seq, toks)
        assert got.shape == ref.shape
        assert torch.equal(got[0], ref[0])  # the prefill runs the lone code on the slot
        assert (got - ref).abs().max().item() < LOGITS_TOLERANCE
        assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_padding_rows_change_nothing_in_exact_mode(voices):
    a, _ = voices
    pool = StaticDecoder(a.t2s, 8, CAPACITY, exact=True)
    with torch.inference_mode():
        joined = [pool.join(*_inputs(_seq((a, text, 40, 0), i, GREEDY))) for i, text in enumerate(TEXTS[:3])]
        for slot, state in joined:
            pool.prefill(slot, state)
        rows = {slot: FedToken(5 + slot, state.y_len, state.total) for slot, state in joined}
        assert pool.step(rows).shape[0] == 4  # 3 rows run in bucket 4
        in_4 = pool.step_runner.run(rows, 4).clone()
        # The same step again (it rewrites the same keys) with more padding rows.
        in_8 = pool.step_runner.run(rows, 8)
        assert torch.equal(in_4[:3], in_8[:3])
        # A row's numbers do not depend on its neighbours either (exact: per-row products).
        lone_row = pool.step_runner.run({0: rows[0]}, 1)
        assert torch.equal(lone_row[0], in_8[0])


def test_removed_sequence_frees_its_slot_for_the_next(voices):
    a, b = voices
    decoder = _static_decoder(max_sequences=3)
    keep = _seq((a, TEXTS[1], 30, 1), "keep", GREEDY)
    drop = _seq((b, TEXTS[2], 30, 2), "drop", GREEDY)
    other = _seq((b, TEXTS[0], 30, 3), "other", GREEDY)
    for seq in (keep, drop, other):
        decoder.add(seq)
    for _ in range(4):
        decoder.step()
    assert [s.slot for s in (keep, drop, other)] == [0, 0, 1]  # slots are per model (voice)
    assert drop.cache_bytes() > 0
    tokens_before = len(drop.tokens)
    assert [s.key for s in decoder.remove("rdrop")] == ["drop"]
    assert drop.slot is None and drop.cache_bytes() == 0
    assert [e.seq.key for e in decoder.step()] == ["keep", "other"]
    assert len(drop.tokens) == tokens_before
    # A newcomer of that voice takes the freed slot while `other` is mid-decode.
    late = _seq((b, TEXTS[3], 30, 4), "late", GREEDY)
    decoder.add(late)
    decoder.step()
    assert late.slot == 0
    # Out of memory: the newest is given up and its slot freed.
    assert decoder.evict_newest() is late and late.slot is None
    decoder.add(late := _seq((b, TEXTS[3], 30, 4), "late", GREEDY))
    decoder.step()
    assert late.slot == 0
    while decoder.running:
        decoder.step()
    for seq, case in ((keep, (a, TEXTS[1], 30, 1)), (other, (b, TEXTS[0], 30, 3)), (late, (b, TEXTS[3], 30, 4))):
        assert seq.tokens == _lone(case, GREEDY)[0]


def test_failed_step_gives_joining_slots_back(voices, monkeypatch):
    a, _ = voices
    decoder = _static_decoder(max_sequences=2)
    first = _seq((a, TEXTS[0], 20, 0), "first", GREEDY)
    decoder.add(first)
    decoder.step()
    joining = _seq((a, TEXTS[1], 20, 1), "joining", GREEDY)
    decoder.add(joining)

    def out_of_memory(*args):
        raise RuntimeError("simulated out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(StaticDecoder, "prefill", out_of_memory)
        with pytest.raises(RuntimeError, match="simulated"):
            decoder.step()
    assert joining.slot is None and joining.steps == 0
    decoder.step()
    assert joining.slot == 1  # slot 1 was given back, or the pool of 2 would be full now
    results = _run(decoder, {})
    assert results["first"][0] == _lone((a, TEXTS[0], 20, 0), GREEDY)[0]
    assert results["joining"][0] == _lone((a, TEXTS[1], 20, 1), GREEDY)[0]


def test_too_long_for_a_slot_takes_the_per_sequence_path(voices):
    a, _ = voices
    decoder = ContinuousDecoder(static=True, static_capacity=64)
    long_text = _seq((a, TEXTS[2], 40, 0), "long", GREEDY)
    decoder.add(long_text)
    decoder.step()
    assert long_text.slot is None and long_text.cache_bytes() > 0
    assert _run(decoder, {})["long"][0] == _lone((a, TEXTS[2], 40, 0), GREEDY)[0]
    # On by default, on the CPU too; static=False is the per-sequence path.
    default = ContinuousDecoder()
    default.add(seq := _seq((a, TEXTS[0], 10, 0), "cpu", GREEDY))
    default.step()
    assert seq.slot == 0
    per_sequence = ContinuousDecoder(static=False)
    per_sequence.add(seq := _seq((a, TEXTS[0], 10, 0), "cpu", GREEDY))
    per_sequence.step()
    assert seq.slot is None and seq.cache_bytes() > 0


def test_half_precision_error_is_small(voices):
    """The fp16/bf16 option, here on the CPU (it is meant for CUDA): logits of the same
    fed tokens against fp32."""
    a, _ = voices
    seqs = [_seq((a, text, 40, 0), i, GREEDY) for i, text in enumerate(TEXTS)]
    tokens = [_lone((a, text, 40, 0), GREEDY)[0] for text in TEXTS]
    reference = _static_logits(StaticDecoder(a.t2s, 4, CAPACITY), seqs, tokens)
    # Measured on this random voice: fp16 3.6e-3, bf16 3.1e-2 at logits up to ~3.6.
    for dtype, bound in ((torch.float16, 0.02), (torch.bfloat16, 0.15)):
        pool = StaticDecoder(a.t2s, 4, CAPACITY, dtype=dtype)
        assert pool.model is not a.t2s and a.t2s.ar_predict_layer.weight.dtype == torch.float32
        got = _static_logits(pool, seqs, tokens)
        error = max((g - r).abs().max().item() for g, r in zip(got, reference))
        agree = sum((g.argmax(-1) == r.argmax(-1)).sum().item() for g, r in zip(got, reference))
        total = sum(len(r) for r in reference)
        print(f"{dtype}: logits max abs error {error:.2e}, greedy agreement {agree}/{total}")
        assert 0 < error < bound
        assert agree >= 0.9 * total


def _on_cuda(seq: Sequence, model: Text2Semantic) -> Sequence:
    return dataclasses.replace(seq, model=model, phones=seq.phones.cuda(), bert=seq.bert.cuda(),
                               prompt=None if seq.prompt is None else seq.prompt.cuda(),
                               generator=torch.Generator("cuda").manual_seed(seq.generator.initial_seed()))


def _cuda_case(voices) -> tuple:
    """The first voice's decoder on the GPU, the test texts as sequences there, and each
    text's lone CPU tokens (fed back so every run sees the same inputs)."""
    a, _ = voices
    model = copy.deepcopy(a.t2s).to("cuda")
    seqs = [_on_cuda(_seq((a, text, 40, 0), i, GREEDY), model) for i, text in enumerate(TEXTS)]
    tokens = [_lone((a, text, 40, 0), GREEDY)[0] for text in TEXTS]
    return a, model, seqs, tokens


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replay_equals_eager_step(voices):
    a, model, seqs, tokens = _cuda_case(voices)
    eager = _static_logits(StaticDecoder(model, 4, CAPACITY, graphs=False), seqs, tokens)
    graphed_pool = StaticDecoder(model, 4, CAPACITY, graphs=True)
    graphed = _static_logits(graphed_pool, seqs, tokens)
    assert set(graphed_pool.step_runner._captured) == {4}
    for g, e in zip(graphed, eager):
        print(f"graph vs eager: max abs diff {(g - e).abs().max().item():.2e}, bitwise {torch.equal(g, e)}")
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    # The continuous decoder takes the static, graphed path by itself on CUDA.
    decoder = ContinuousDecoder(4)
    seq = _on_cuda(_seq((a, TEXTS[1], 40, 0), "g", GREEDY), model)
    decoder.add(seq)
    decoder.step()
    assert seq.slot == 0
    lone = model.decode(seq.phones, seq.bert, seq.prompt, GREEDY, None, 40).tokens
    assert _run(decoder, {})["g"][0] == lone


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_error_measured(voices):
    _, model, seqs, tokens = _cuda_case(voices)
    reference = _static_logits(StaticDecoder(model, 4, CAPACITY), seqs, tokens)
    got = _static_logits(StaticDecoder(model, 4, CAPACITY, dtype=torch.float16), seqs, tokens)
    error = max((g - r).abs().max().item() for g, r in zip(got, reference))
    agree = sum((g.argmax(-1) == r.argmax(-1)).sum().item() for g, r in zip(got, reference))
    total = sum(len(r) for r in reference)
    print(f"CUDA fp16: logits max abs error {error:.2e}, greedy agreement {agree}/{total}")
    assert error < 0.02
    assert agree >= 0.9 * total


def test_growable_cache_widens_and_keeps_what_slots_hold(voices):
    """Eager steps start with a narrow cache and widen it as sequences grow; the tokens are
    those of a full-width cache."""
    a, _ = voices
    case = (a, TEXTS[2], 200, 0)
    lone = _lone(case, GREEDY)[0]
    decoder = ContinuousDecoder(static=True, static_capacity=1024)
    decoder.add(seq := _seq(case, "grow", GREEDY))
    decoder.step()
    cache = seq._pool.cache
    start_width = cache.width
    assert cache.growable and start_width < cache.max_width
    assert _run(decoder, {})["grow"][0] == lone
    assert cache.width > start_width  # the prompt + 200 tokens outgrew the first width
