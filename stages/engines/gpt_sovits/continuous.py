"""Continuous batching of the text-to-semantic decoder.

Sequences from different requests (and voices) share each decoding step, each with its
own KV cache, length, sampling settings and seeded generator. A sequence joins at the
next step after `add` (its prompt prefill runs alone in that step) and leaves at its EOS,
its token limit, or `remove`, without waiting for the others.

Exactness: a sequence's tokens do not depend on what else is in the batch. The linear
layers of a batched step run as one matrix product per row (`baddbmm` over the batch with
the weight broadcast), which on the CPU gives bit-for-bit the numbers a lone
`Text2Semantic.decode` gets; attention runs per sequence on its own cache. On a GPU the
default is one shared matrix product per layer (throughput), where results may differ
from a lone run in the last bit; `exact=True` keeps the per-row products there too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import torch
from torch import Tensor
from torch.nn import functional as F

from stages.engines.gpt_sovits.t2s import (MAX_DECODE_STEPS, MIN_TOKENS_BEFORE_EOS, Block, LayerCache, Sampling,
                                           Text2Semantic, sample)


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
    early_stop: int
    tokens: list[int] = field(default_factory=list)  # generated so far, EOS excluded
    finished: bool = False
    stopped_by_eos: bool = False
    steps: int = 0
    # Decoding state, set by the decoder.
    _h: Tensor | None = None  # input of the next forward: [1, t, d]
    _mask: Tensor | None = None
    _caches: list[LayerCache] = field(default_factory=list)
    _history: Tensor | None = None  # every token so far (prompt included), for the repetition penalty
    _n_history: int = 0
    _positions: Tensor | None = None

    def cache_bytes(self) -> int:
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self._caches)


@dataclass(frozen=True)
class StepEvent:
    seq: Sequence
    token: int | None  # the new token, None when the sequence ended this step
    finished: bool


class ContinuousDecoder:
    """Owns the running batch: `add`, `remove`, and `step` one token at a time."""

    def __init__(self, max_sequences: int = 16, exact: bool | None = None) -> None:
        self.max_sequences = max_sequences
        self.exact = exact
        self.running: dict[Hashable, Sequence] = {}
        self.steps = 0
        self.peak_batch = 0

    def __len__(self) -> int:
        return len(self.running)

    def has_room(self) -> bool:
        return len(self.running) < self.max_sequences

    def add(self, seq: Sequence) -> None:
        if not self.has_room():
            raise DecoderFull(f"{len(self.running)} sequences running (limit {self.max_sequences})")
        if seq.key in self.running:
            raise ValueError(f"sequence {seq.key!r} is already running")
        _prepare(seq)
        self.running[seq.key] = seq

    def remove(self, request_id: str) -> list[Sequence]:
        """Take a request's sequences out of the batch and free their caches."""
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
        seq._caches, seq._h, seq._history, seq._mask = [], None, None, None

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """One decoding step of every running sequence: prefills alone, the rest batched per model."""
        if not self.running:
            return []
        self.steps += 1
        self.peak_batch = max(self.peak_batch, len(self.running))
        seqs = list(self.running.values())
        hidden: dict[Hashable, Tensor] = {}
        groups: dict[int, list[Sequence]] = {}
        for seq in seqs:
            if seq._h.shape[1] > 1 or seq._mask is not None:  # prefill (or a one-phone first step)
                hidden[seq.key] = _forward_one(seq)
            else:
                groups.setdefault(id(seq.model), []).append(seq)
        for group in groups.values():
            exact = self.exact if self.exact is not None else group[0].phones.device.type == "cpu"
            out = _forward_batch(group, exact)
            for i, seq in enumerate(group):
                hidden[seq.key] = out[i:i + 1]
        events = []
        for seq in seqs:
            event = _advance(seq, hidden[seq.key])
            events.append(event)
            if event.finished:
                self._drop(seq)
        return events


def _prepare(seq: Sequence) -> None:
    """The state `Text2Semantic.decode` sets up before its loop, kept on the sequence."""
    model, cfg = seq.model, seq.model.cfg
    x = model.ar_text_embedding.word_embeddings(seq.phones) + model.bert_proj(seq.bert.unsqueeze(0).transpose(1, 2))
    x = x + model.ar_text_position.alpha * model._positions(x.shape[1])
    x_len = x.shape[1]
    device = seq.phones.device
    history = seq.prompt if seq.prompt is not None else torch.zeros(1, 0, dtype=torch.long, device=device)
    y_len = history.shape[1]
    if y_len:
        y = model.ar_audio_embedding.word_embeddings(history)
        xy = torch.cat([x, y + model.ar_audio_position.alpha * model._positions(y_len)], dim=1)
    else:
        xy = x
    total = x_len + y_len
    allowed = torch.zeros(total, total, dtype=torch.bool, device=device)
    allowed[:, :x_len] = True
    allowed[x_len:, x_len:] = torch.ones(y_len, y_len, dtype=torch.bool, device=device).tril()
    capacity = total + MAX_DECODE_STEPS
    seq._caches = [LayerCache(x.new_empty(1, capacity, cfg.hidden_dim), x.new_empty(1, capacity, cfg.hidden_dim))
                   for _ in model.h.layers]
    seq._history = torch.empty(1, y_len + MAX_DECODE_STEPS + 1, dtype=torch.long, device=device)
    seq._history[:, :y_len] = history
    seq._n_history = y_len
    seq._mask = allowed.view(1, 1, total, total)
    seq._h = xy
    seq._positions = model.ar_audio_position.alpha * model._positions(y_len + MAX_DECODE_STEPS)[:, y_len:]


def _forward_one(seq: Sequence) -> Tensor:
    h = seq._h
    for layer, cache in zip(seq.model.h.layers, seq._caches):
        h = layer(h, cache, seq._mask)
    seq._mask = None
    return h[:, -1]


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None, exact: bool) -> Tensor:
    """x [n, 1, in] -> [n, 1, out]; `exact`: one product per row, equal to a lone row's."""
    if not exact:
        return F.linear(x, weight, bias)
    n = x.shape[0]
    w = weight.t().unsqueeze(0).expand(n, -1, -1)
    if bias is None:
        return torch.bmm(x, w)
    return torch.baddbmm(bias.view(1, 1, -1).expand(n, 1, -1), x, w)


def _block_batch(layer: Block, x: Tensor, caches: list[LayerCache], exact: bool) -> Tensor:
    """`Block.forward` for n sequences of one new token each, attention per sequence."""
    n, _, d = x.shape
    heads = layer.n_heads
    attn_in = layer.self_attn
    qkv = _linear(x, attn_in.in_proj_weight, attn_in.in_proj_bias, exact)
    q, k, v = qkv.chunk(3, dim=-1)
    outs = []
    for i, cache in enumerate(caches):
        ki, vi = cache.append(k[i:i + 1], v[i:i + 1])
        outs.append(F.scaled_dot_product_attention(
            q[i:i + 1].view(1, 1, heads, -1).transpose(1, 2), ki.view(1, -1, heads, d // heads).transpose(1, 2),
            vi.view(1, -1, heads, d // heads).transpose(1, 2), None))
    attn = torch.cat(outs).transpose(1, 2).reshape(n, 1, d)
    attn = _linear(attn, attn_in.out_proj.weight, attn_in.out_proj.bias, exact)
    x = layer.norm1(x + attn)
    ff = _linear(F.relu(_linear(x, layer.linear1.weight, layer.linear1.bias, exact)),
                 layer.linear2.weight, layer.linear2.bias, exact)
    return layer.norm2(x + ff)


def _forward_batch(group: list[Sequence], exact: bool) -> Tensor:
    h = torch.cat([s._h for s in group])  # [n, 1, d]
    for li, layer in enumerate(group[0].model.h.layers):
        h = _block_batch(layer, h, [s._caches[li] for s in group], exact)
    return h[:, -1]


def _advance(seq: Sequence, last: Tensor) -> StepEvent:
    """Sample the next token from the last hidden state [1, d], as `decode` does."""
    model, cfg = seq.model, seq.model.cfg
    step = seq.steps
    seq.steps += 1
    logits = _predict(model, last)
    if step < MIN_TOKENS_BEFORE_EOS:
        logits = logits[:, :-1]
    s = seq.sampling
    greedy = int(torch.argmax(logits, dim=-1)[0])
    greedy_only = s.top_k == 1 and s.repetition_penalty == 1.0
    token = greedy if greedy_only else sample(logits, seq._history[:, :seq._n_history], s, seq.generator)
    if greedy == cfg.eos or token == cfg.eos:
        seq.finished = seq.stopped_by_eos = True
        return StepEvent(seq, None, True)
    seq.tokens.append(token)
    seq._history[0, seq._n_history] = token
    seq._n_history += 1
    if len(seq.tokens) > seq.early_stop or seq.steps >= MAX_DECODE_STEPS:
        seq.finished = True
        return StepEvent(seq, token, True)
    token_in = torch.tensor([[token]], dtype=torch.long, device=last.device)
    seq._h = model.ar_audio_embedding.word_embeddings(token_in) + seq._positions[:, step:step + 1]
    return StepEvent(seq, token, False)


def _predict(model: Text2Semantic, last: Tensor) -> Tensor:
    # Always the lone-row product: cheap, and equal to what `decode` computes.
    return model.ar_predict_layer(last)


def sequence_for(model, key: Hashable, request_id: str, segments, sampling: Sampling, seed: int | None,
                 early_stop: int | None = None) -> Sequence:
    """A `Sequence` for a GsvModel (voice.py) and a text's language runs, set up exactly as
    `GsvModel.semantic_tokens` sets up a lone decode."""
    prompt = model._prompt()
    ids, bert = model.text_inputs(segments)
    phones = torch.tensor([prompt.phone_ids + ids], dtype=torch.long, device=model.device)
    generator = torch.Generator(model.device).manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    return Sequence(key, request_id, model.t2s, phones, torch.cat([prompt.bert, bert], dim=1), prompt.tokens,
                    sampling, generator, model.t2s.cfg.early_stop if early_stop is None else early_stop)
