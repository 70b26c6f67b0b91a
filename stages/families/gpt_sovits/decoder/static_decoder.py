"""Decoding many sequences of one semantic decoder on a static KV cache.

A `StaticDecoder` owns a `SlotCache` and the `StaticStep` over it. A sequence joins by
taking a slot (its prefill runs eagerly, alone, writing into the slot), takes part in
`step`s (padded up to a bucket size, a CUDA graph per bucket on CUDA), and leaves by
giving the slot back; memory does not grow while decoding. Sampling stays with the caller,
per sequence, so seeded draws do not depend on the batch.

Optionally the decoder runs in half precision (`dtype`, weights and cache; meant for CUDA
and CPUs with bf16 units): it then decodes with its own converted copy of the model and
hands out float32 logits; or, on the CPU, with int8 weights in its steps (`int8`) and
in its prefills too (`int8_prefill`).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from voxpipe.stages.families.gpt_sovits.decoder.int8 import Int8Decoder
from voxpipe.stages.families.gpt_sovits.decoder.slot_cache import SlotCache, keys_needed
from voxpipe.stages.families.gpt_sovits.decoder.static_step import FedToken, StaticStep, bucket_for, bucket_sizes
from voxpipe.stages.families.gpt_sovits.decoder.t2s import MAX_DECODE_STEPS, PrefillState, Text2Semantic

# Columns per slot: room for a long prompt plus target text, then the longest decode.
# Sequences that need more decode on the dynamic path instead.
DEFAULT_PREFILL_LIMIT = 1024
DEFAULT_CAPACITY = DEFAULT_PREFILL_LIMIT + MAX_DECODE_STEPS


class StaticDecoder:
    def __init__(self, model: Text2Semantic, slots: int, capacity: int = DEFAULT_CAPACITY,
                 dtype: torch.dtype | None = None, exact: bool | None = None, graphs: bool | None = None,
                 int8: bool = False, int8_prefill: bool = False) -> None:
        """`exact` (default off) runs the linear layers one row at a time, so a row's
        numbers do not depend on the others (on the CPU); off, each layer is one shared
        product over the batch. `graphs` (default: on CUDA) replays each bucket's step as
        a CUDA graph. `int8`: the steps' products with int8 weights (int8.py; CPU);
        `int8_prefill`: the prefills' products too."""
        weight = model.ar_predict_layer.weight
        device = weight.device
        dtype = weight.dtype if dtype is None else dtype
        with torch.inference_mode():
            self.model = model if dtype == weight.dtype else copy.deepcopy(model).to(dtype)
            graphs = device.type == "cuda" if graphs is None else graphs
            # Graphs need fixed addresses: a full-width cache. Eager steps widen it as needed.
            self.cache = SlotCache(len(model.h.layers), slots, capacity, model.cfg.hidden_dim, model.cfg.n_heads,
                                   dtype, device, growable=not graphs)
            quantized = Int8Decoder(self.model) if int8 or int8_prefill else None
            self.prefill_products = quantized if int8_prefill else None
            self.step_runner = StaticStep(self.model, self.cache, bool(exact) and not int8, graphs,
                                          quantized if int8 else None)
        self.buckets = bucket_sizes(slots)

    @property
    def in_use(self) -> int:
        return self.cache.in_use

    def join(self, phones: Tensor, bert: Tensor, prompt: Tensor | None,
             early_stop: int) -> tuple[int, PrefillState] | None:
        """A slot and the sequence's prefill state; None when no slot is free or the
        sequence could outgrow one."""
        total = phones.shape[1] + (prompt.shape[1] if prompt is not None else 0)
        if keys_needed(total, early_stop) > self.cache.capacity:
            return None
        slot = self.cache.acquire()
        if slot is None:
            return None
        try:
            return slot, self.model.prefill_state(phones, bert, prompt, room_after_prefill=0)
        except BaseException:  # e.g. out of memory: the slot must not leak
            self.cache.release(slot)
            raise

    def leave(self, slot: int) -> None:
        self.cache.release(slot)

    def prefill(self, slot: int, state: PrefillState) -> Tensor:
        """The prefill of a joined sequence, eager and alone, exactly as a lone decode runs
        it (or with int8 products); its keys/values then move into the slot -> float32
        logits [1, vocab]."""
        h = self.model.run_layers(state.xy, state.caches, state.mask, self.prefill_products)
        self.cache.store(slot, state.caches)
        state.caches = []
        return self.model.ar_predict_layer(h[:, -1]).float()

    def step(self, rows: dict[int, FedToken]) -> Tensor:
        """One token for each slot in `rows` -> float32 logits [bucket, vocab], row = slot."""
        bucket = bucket_for(max(rows) + 1, self.buckets)
        return self.step_runner.run(rows, bucket).float()
