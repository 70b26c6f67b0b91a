"""Continuous batching of the text-to-semantic decoder.

Sequences from different requests (and voices) share each decoding step, each with its
own KV cache, length, sampling settings and seeded generator. A sequence joins at the
next step after `add` that has room for its prefill (`step(max_prefills)`; the prefill
runs alone in that step) and leaves at its EOS, its token limit, or `remove`, without
waiting for the others.

By default every model decodes through a `StaticDecoder` (static_decoder.py): a slot per
sequence in one KV cache and one step over the whole batch, each layer one shared matrix
product. That is what makes batching pay on a CPU too (a 24-layer x 512 decoder does
about 6x the tokens/s at batch 16 as at batch 1). A sequence's numbers then depend on
its batch by float rounding only: its logits stay within 1e-3 of a lone decode and its
greedy tokens equal the lone decode's (tests/test_gsv_batched_equality.py). `exact=True`
runs each row's products alone instead (a row's numbers then do not depend on the others; slower);
`static=False` gives each sequence its own caches (the per-sequence path, which a
sequence too long for a slot, or finding none free, takes anyway).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Hashable

import torch
from torch import Tensor
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.decoder.batched_block import block_rows
from voxpipe.stages.families.gpt_sovits.decoder.static_decoder import DEFAULT_CAPACITY, StaticDecoder
from voxpipe.stages.families.gpt_sovits.decoder.static_step import FedToken
from voxpipe.stages.families.gpt_sovits.decoder.t2s import (MIN_TOKENS_BEFORE_EOS, LayerCache, PrefillState, Sampling,
                                           Text2Semantic, sample, token_limit)


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}  # a model's `precision` -> its steps' dtype


class DecoderFull(Exception):
    """The running batch is at its limit; try again after a sequence leaves."""


@dataclass
class Sequence:
    """One text being decoded: what `Text2Semantic.decode` takes, plus a key to find it."""

    key: Hashable  # e.g. (request_id, chunk seq)
    request_id: str
    model: Text2Semantic
    phones: Tensor  # [1, P] prompt phones + target phones
    bert: Tensor  # [1024, P]
    prompt: Tensor | None  # [1, T0] prompt semantic tokens
    sampling: Sampling
    generator: torch.Generator
    early_stop: int  # upstream's early_stop_num: it keeps at most token_limit(early_stop) tokens
    tokens: list[int] = field(default_factory=list)  # generated so far, EOS excluded
    finished: bool = False
    stopped_by_eos: bool = False
    steps: int = 0
    # Decoding state, set by the decoder.
    _state: PrefillState | None = None
    _pool: StaticDecoder | None = None  # the static decoder holding its slot, None on the per-sequence path
    _slot: int | None = None

    @property
    def slot(self) -> int | None:
        """Its slot in a static KV cache, None when it has its own caches (or none)."""
        return self._slot

    def cache_bytes(self) -> int:
        if self._pool is not None:
            return self._pool.cache.slot_bytes()
        if self._state is None:
            return 0
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self._state.caches)


@dataclass(frozen=True)
class StepEvent:
    seq: Sequence
    token: int | None  # the new token, None when the sequence ended this step
    finished: bool


class ContinuousDecoder:
    """Owns the running batch: `add`, `remove`, and `step` one token at a time.

    `static` (default on; False turns it off) decodes through a `StaticDecoder` per model:
    a slot-allocated KV cache and, on CUDA, graphed steps; `static_dtype` (e.g.
    torch.float16) runs it in half precision. A sequence that would outgrow a slot of
    `static_capacity` columns, or finds no free slot, takes the per-sequence path.
    Otherwise each model's steps run in its own `precision` (fp32, bf16, fp16, int8: the
    engine's choice for the voice, precision.py).
    """

    def __init__(self, max_sequences: int = 16, exact: bool | None = None, static: bool | None = None,
                 static_capacity: int = DEFAULT_CAPACITY, static_dtype: torch.dtype | None = None) -> None:
        self.max_sequences = max_sequences
        self.exact = exact
        self.static = static
        self.static_capacity = static_capacity
        self.static_dtype = static_dtype
        self.running: dict[Hashable, Sequence] = {}
        self.steps = 0
        self.peak_batch = 0
        self._pools: dict[Text2Semantic, StaticDecoder] = {}

    def __len__(self) -> int:
        return len(self.running)

    def has_room(self) -> bool:
        return len(self.running) < self.max_sequences

    def add(self, seq: Sequence) -> None:
        if not self.has_room():
            raise DecoderFull(f"{len(self.running)} sequences running (limit {self.max_sequences})")
        if seq.key in self.running:
            raise ValueError(f"sequence {seq.key!r} is already running")
        self.running[seq.key] = seq

    def _start(self, seq: Sequence) -> None:
        """Give a joining sequence a slot or caches of its own. It runs inside `step`, so
        running out of memory here reaches the caller's eviction like any step's."""
        pool = self._pool_for(seq.model)
        joined = pool.join(seq.phones, seq.bert, seq.prompt, seq.early_stop) if pool is not None else None
        if joined is not None:
            seq._pool, (seq._slot, seq._state) = pool, joined
        else:
            seq._state = seq.model.prefill_state(seq.phones, seq.bert, seq.prompt)

    def remove(self, request_id: str) -> list[Sequence]:
        """Take a request's sequences out of the batch and free their caches (or slots)."""
        gone = [s for s in self.running.values() if s.request_id == request_id]
        for seq in gone:
            self._drop(seq)
        return gone

    def evict_newest(self) -> Sequence | None:
        """Out of memory: give up the last admitted sequence (it can restart from its seed)."""
        if not self.running:
            return None
        seq = list(self.running.values())[-1]
        self._drop(seq)
        return seq

    def _drop(self, seq: Sequence) -> None:
        self.running.pop(seq.key, None)
        _release(seq)

    def _pool_for(self, model: Text2Semantic) -> StaticDecoder | None:
        if self.static is False:
            return None
        pool = self._pools.get(model)
        if pool is None:
            # A pool holds a whole cache: keep only those in use (e.g. of voices since unloaded).
            for other in [m for m, p in self._pools.items() if p.in_use == 0]:
                del self._pools[other]
            dtype = self.static_dtype or HALF.get(model.precision)
            pool = self._pools[model] = StaticDecoder(model, self.max_sequences, self.static_capacity,
                                                      dtype, self.exact, int8=model.precision == "int8",
                                                      int8_prefill=model.prefill_precision == "int8")
        return pool

    @torch.inference_mode()
    def step(self, max_prefills: int | None = None) -> list[StepEvent]:
        """One decoding step of every running sequence: prefills alone, the rest batched per
        model. `max_prefills` (None: all) caps the joining sequences prefilled in this step,
        oldest first; the others wait for a later step. A prefill costs as much as many
        steps on a CPU: a burst of arrivals prefilled at once holds back every sequence
        already running, and the first audio of all of them."""
        seqs = list(self.running.values())
        if max_prefills is not None:
            waiting = {id(s) for s in [s for s in seqs if s.steps == 0][max(0, max_prefills):]}
            seqs = [s for s in seqs if id(s) not in waiting]
        if not seqs:
            return []
        self.steps += 1
        self.peak_batch = max(self.peak_batch, len(seqs))
        try:
            logits = self._logits(seqs)
        except BaseException:  # e.g. out of memory: joining sequences start over at the next step
            for seq in seqs:
                if seq.steps == 0:
                    _release(seq)
            raise
        events = []
        for seq in seqs:
            event = _advance(seq, logits[seq.key])
            events.append(event)
            if event.finished:
                self._drop(seq)
        return events

    def _logits(self, seqs: list[Sequence]) -> dict[Hashable, Tensor]:
        """Each sequence's next-token logits [1, vocab]: joining ones start and prefill alone,
        the others run batched per model (or per static decoder)."""
        logits: dict[Hashable, Tensor] = {}
        dynamic: dict[int, list[Sequence]] = {}
        static: dict[int, list[Sequence]] = {}
        for seq in seqs:
            if seq.steps == 0:
                self._start(seq)
                logits[seq.key] = _prefill(seq)
            elif seq._pool is not None:
                static.setdefault(id(seq._pool), []).append(seq)
            else:
                dynamic.setdefault(id(seq.model), []).append(seq)
        for group in dynamic.values():
            out = _forward_batch(group, bool(self.exact))
            for i, seq in enumerate(group):
                logits[seq.key] = _predict(seq.model, out[i:i + 1])
        for group in static.values():
            out = group[0]._pool.step({seq._slot: _fed_token(seq) for seq in group})
            for seq in group:
                logits[seq.key] = out[seq._slot:seq._slot + 1]
        return logits


def _release(seq: Sequence) -> None:
    """Free a sequence's slot or caches."""
    if seq._pool is not None and seq._slot is not None:
        seq._pool.leave(seq._slot)
    seq._state, seq._pool, seq._slot = None, None, None


def _prefill(seq: Sequence) -> Tensor:
    """The first step: the whole prefill, alone -> logits [1, vocab]."""
    if seq._pool is not None:
        return seq._pool.prefill(seq._slot, seq._state)
    state = seq._state
    h = seq.model.run_layers(state.xy, state.caches, state.mask)
    return _predict(seq.model, h[:, -1])


def _fed_token(seq: Sequence) -> FedToken:
    """The last token as the static step takes it: its audio position and cache column."""
    state, done = seq._state, seq.steps - 1  # tokens fed back before this one
    return FedToken(seq.tokens[-1], state.y_len + done, state.total + done)


def _next_input(seq: Sequence) -> Tensor:
    """The last token's embedding plus its audio position, [1, 1, d], as `decode` feeds it."""
    done = seq.steps - 1
    token_in = torch.tensor([[seq.tokens[-1]]], dtype=torch.long, device=seq.phones.device)
    return seq.model.ar_audio_embedding.word_embeddings(token_in) + seq._state.positions[:, done:done + 1]


def _attend_each(caches: list[LayerCache], heads: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention of each row over its own per-sequence cache (lengths differ)."""
    d = q.shape[-1]
    outs = []
    for i, cache in enumerate(caches):
        ki, vi = cache.append(k[i:i + 1], v[i:i + 1])
        outs.append(F.scaled_dot_product_attention(
            q[i:i + 1].view(1, 1, heads, -1).transpose(1, 2), ki.view(1, -1, heads, d // heads).transpose(1, 2),
            vi.view(1, -1, heads, d // heads).transpose(1, 2), None))
    return torch.cat(outs)


def _forward_batch(group: list[Sequence], exact: bool) -> Tensor:
    h = torch.cat([_next_input(s) for s in group])  # [n, 1, d]
    for li, layer in enumerate(group[0].model.h.layers):
        caches = [s._state.caches[li] for s in group]
        h = block_rows(layer, h, partial(_attend_each, caches, layer.n_heads), exact)
    return h[:, -1]


def _advance(seq: Sequence, logits: Tensor) -> StepEvent:
    """Pick the next token from logits [1, vocab], as `decode` does."""
    cfg, state = seq.model.cfg, seq._state
    step = seq.steps
    seq.steps += 1
    if step < MIN_TOKENS_BEFORE_EOS:
        logits = logits[:, :-1]
    s = seq.sampling
    greedy = int(torch.argmax(logits, dim=-1)[0])
    greedy_only = s.top_k == 1 and s.repetition_penalty == 1.0
    token = greedy if greedy_only else sample(logits, state.previous_tokens(), s, seq.generator)
    if greedy == cfg.eos or token == cfg.eos:
        seq.finished = seq.stopped_by_eos = True
        return StepEvent(seq, None, True)
    seq.tokens.append(token)
    state.record(token)
    if len(seq.tokens) >= token_limit(seq.early_stop):
        seq.finished = True
        return StepEvent(seq, token, True)
    return StepEvent(seq, token, False)


def _predict(model: Text2Semantic, last: Tensor) -> Tensor:
    # Always the lone-row product: cheap, and equal to what `decode` computes.
    return model.ar_predict_layer(last)


def sequence_for(model, key: Hashable, request_id: str, segments, sampling: Sampling, seed: int | None,
                 early_stop: int | None = None, text_inputs: tuple[list[int], Tensor] | None = None) -> Sequence:
    """A `Sequence` for a GsvModel (voice.py) and a text's language runs, set up exactly as
    `GsvModel.semantic_tokens` sets up a lone decode; `text_inputs`: the runs' phone ids
    and BERT features when computed already (voice.batch_text_inputs)."""
    prompt = model._prompt()
    ids, bert = model.text_inputs(segments) if text_inputs is None else text_inputs
    phones = torch.tensor([prompt.phone_ids + ids], dtype=torch.long, device=model.device)
    generator = torch.Generator(model.device).manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    return Sequence(key, request_id, model.t2s, phones, torch.cat([prompt.bert, bert], dim=1), prompt.tokens,
                    sampling, generator, model.t2s.cfg.early_stop if early_stop is None else early_stop)
