"""The semantic decoder's one-token step over the slots of a `SlotCache`, as a fixed
sequence of tensor operations on tensors of fixed shape and address (per bucket size),
so that on CUDA it can be captured once per bucket and replayed as a CUDA graph.

Row i of a step of n rows is slot i. Its inputs are the token fed back, that token's
audio position and the cache column it is written to (the sequence's length so far);
rows without a sequence write to the slot's sink column. Each row attends to the columns
up to and including its own, masked over the whole slot, so no shape depends on lengths
and nothing is read back to the host inside the step.
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Iterator, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from voxpipe.stages.families.gpt_sovits.decoder.batched_block import block_rows, row_linear
from voxpipe.stages.families.gpt_sovits.decoder.int8 import Int8Decoder
from voxpipe.stages.families.gpt_sovits.decoder.slot_cache import SlotCache
from voxpipe.stages.families.gpt_sovits.decoder.t2s import Text2Semantic

WARMUP_RUNS = 2  # eager runs on a side stream before a capture, as torch's CUDA graph docs ask


class FedToken(NamedTuple):
    token: int
    audio_position: int  # index into the audio positions: prompt tokens + tokens generated before
    column: int  # the cache column its keys/values go to: the sequence's length so far


def bucket_sizes(slots: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `slots`, then `slots`: one graph per size, padding at most 2x."""
    sizes = []
    size = 1
    while size < slots:
        sizes.append(size)
        size *= 2
    return (*sizes, slots)


def bucket_for(rows: int, sizes: tuple[int, ...]) -> int:
    for size in sizes:
        if size >= rows:
            return size
    raise ValueError(f"{rows} rows exceed the largest bucket {sizes[-1]}")


@contextlib.contextmanager
def _batch_invariant_attention(device: torch.device, exact: bool) -> Iterator[None]:
    # The CPU's fused attention splits its work by batch size and thread count, so a row's
    # result would depend on the other rows; the plain (math) kernel computes each alone.
    if exact and device.type == "cpu":
        with sdpa_kernel(SDPBackend.MATH):
            yield
    else:
        yield


class StaticStep:
    def __init__(self, model: Text2Semantic, cache: SlotCache, exact: bool, graphs: bool,
                 int8: Int8Decoder | None = None) -> None:
        device = cache.k[0].device
        if graphs and device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.model, self.cache, self.exact, self.graphs = model, cache, exact, graphs
        self.int8 = int8  # the layers' products with int8 weights (int8.py), None: the model's own
        self.device = device
        # Rows: token, audio position, cache column; one column per slot, filled each step.
        self.inputs = torch.zeros(3, cache.slots, dtype=torch.long, device=device)
        self._key_index = torch.arange(cache.width, device=device)
        # Flat index of (slot, head, column 0) in a cache viewed as [slots * heads * width, head_dim].
        self._row_start = (torch.arange(cache.slots * cache.heads, device=device) * cache.width).view(
            cache.slots, cache.heads)
        self._audio_positions = (model.ar_audio_position.alpha * model._positions(cache.capacity))[0]
        self._captured: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._graph_pool: tuple[int, int] | None = None

    def run(self, rows: dict[int, FedToken], bucket: int) -> Tensor:
        """One step of slots [0, bucket) (`rows`: slot -> its input; the others are padding)
        -> logits [bucket, vocab]. On CUDA graphs the result is overwritten by the next step."""
        last_column = max(fed.column for fed in rows.values())
        if self.cache.growable:
            self.cache.ensure(last_column + 1)
        slots = self.cache.slots
        tokens, audio_positions, columns = [0] * slots, [0] * slots, [self.cache.sink] * slots
        for slot, fed in rows.items():
            if not 0 <= slot < bucket:
                raise ValueError(f"slot {slot} is outside the step's bucket of {bucket}")
            tokens[slot], audio_positions[slot], columns[slot] = fed
        self.inputs.copy_(torch.tensor([tokens, audio_positions, columns]))  # one copy to the device
        if not self.graphs:
            # Eager: attend over the columns in use only (rounded up), not the whole slot.
            return self.forward(bucket, min(self.cache.width, -(-(last_column + 1) // 16) * 16))
        captured = self._captured.get(bucket)
        if captured is None:
            captured = self._captured[bucket] = self._capture(bucket)
        graph, logits = captured
        graph.replay()
        return logits

    def forward(self, n: int, columns_used: int | None = None) -> Tensor:
        """The step itself over the first n slots (eager; what a graph records), attending
        over the first `columns_used` columns of each slot (default: all of them)."""
        model, cache = self.model, self.cache
        tokens, audio_positions, columns = self.inputs[0, :n], self.inputs[1, :n], self.inputs[2, :n]
        h = model.ar_audio_embedding.word_embeddings(tokens) + self._audio_positions[audio_positions]
        h = h.unsqueeze(1)
        width = cache.width
        used = width if columns_used is None else columns_used
        if self.graphs:  # fixed tensors: the graph's addresses
            key_index, row_start = self._key_index, self._row_start
        else:  # a growable cache changes width between steps
            key_index = torch.arange(used, device=self.device)
            row_start = (torch.arange(cache.slots * cache.heads, device=self.device) * width).view(
                cache.slots, cache.heads)
        flat_columns = (row_start[:n] + columns.unsqueeze(1)).view(-1)  # [n * heads]
        allowed = (key_index[:used].unsqueeze(0) <= columns.unsqueeze(1)).view(n, 1, 1, used)
        int8 = self.int8.blocks if self.int8 is not None else [None] * len(model.h.layers)
        with _batch_invariant_attention(self.device, self.exact):
            for layer, k_cache, v_cache, layer8 in zip(model.h.layers, cache.k, cache.v, int8):
                attend = partial(_attend_slots, k_cache, v_cache, flat_columns, allowed, layer.n_heads, used)
                h = block_rows(layer, h, attend, self.exact, layer8)
        if self.int8 is not None:
            return self.int8.predict(h)[:, 0]
        return row_linear(h, model.ar_predict_layer.weight, None, self.exact)[:, 0]

    def _capture(self, n: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        # Warm-up runs see this step's real inputs: they write the same keys/values the
        # replay will, so they change nothing.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.forward(n)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()  # buckets never replay at once: share memory
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            logits = self.forward(n)
        return graph, logits


def _attend_slots(k_cache: Tensor, v_cache: Tensor, flat_columns: Tensor, allowed: Tensor, heads: int, used: int,
                  q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Write the new keys/values into each row's slot, then attend over the row's first
    `used` columns."""
    n, _, d = q.shape
    head_dim = d // heads
    k_cache.view(-1, head_dim).index_copy_(0, flat_columns, k.reshape(n * heads, head_dim))
    v_cache.view(-1, head_dim).index_copy_(0, flat_columns, v.reshape(n * heads, head_dim))
    return F.scaled_dot_product_attention(q.view(n, 1, heads, head_dim).transpose(1, 2), k_cache[:n, :, :used],
                                          v_cache[:n, :, :used], allowed)
