"""A static KV cache for the semantic decoder: one slot per running sequence.

Keys and values of every layer live in tensors [slots, heads, capacity + 1, head_dim]
allocated once, so decoding never allocates per step and the step's tensors keep their
addresses (what a CUDA graph needs). Heads come before columns so that the first n slots
are one contiguous block, the layout attention takes as it is for any n. A sequence takes
the lowest free slot when it joins and gives it back when it leaves. The last column of
each slot is a sink: rows of a padded step that belong to no sequence write their keys
there, where no sequence ever reads.
"""
from __future__ import annotations

import torch
from torch import Tensor

from voxpipe.stages.families.gpt_sovits.decoder.t2s import LayerCache, token_limit

COLUMN_ALIGNMENT = 16


def keys_needed(prefill_length: int, early_stop: int) -> int:
    """Cache columns a sequence can fill: its prefill, then one per token fed back (a
    sequence keeps at most `token_limit(early_stop)` tokens; the last is never fed)."""
    return prefill_length + token_limit(early_stop) - 1


GROW_FROM = 256  # first physical width of a growable cache, in columns


def _aligned(columns: int) -> int:
    return -(-columns // COLUMN_ALIGNMENT) * COLUMN_ALIGNMENT


class SlotCache:
    def __init__(self, n_layers: int, slots: int, capacity: int, hidden: int, heads: int, dtype: torch.dtype,
                 device: torch.device, growable: bool = False) -> None:
        """`growable` (for eager steps, not CUDA graphs, which need fixed addresses): start
        narrow and widen as sequences grow (`ensure`), so that memory and the per-step
        attention follow the columns in use rather than `capacity`."""
        self.slots, self.hidden, self.heads = slots, hidden, heads
        self.dtype, self.device, self.n_layers = dtype, device, n_layers
        # Columns per slot, the sink included, rounded up: CUDA's fused attention wants the
        # mask's last dimension aligned and would pad a copy of it on every call.
        self.max_width = _aligned(capacity + 1)
        self.capacity = self.max_width - 1  # usable columns (at least those asked for)
        self.growable = growable
        self.width = min(self.max_width, GROW_FROM) if growable else self.max_width
        # Zeros, not empty: padded rows attend over whole slots, and garbage there could be NaN.
        self.k = [self._zeros(self.width) for _ in range(n_layers)]
        self.v = [self._zeros(self.width) for _ in range(n_layers)]
        self._free = list(range(slots))

    def _zeros(self, width: int) -> Tensor:
        return torch.zeros((self.slots, self.heads, width, self.hidden // self.heads), dtype=self.dtype,
                           device=self.device)

    @property
    def sink(self) -> int:
        """The last column: padded rows write there, and no sequence reads it."""
        return self.width - 1

    def ensure(self, columns: int) -> None:
        """Room for columns [0, columns) plus the sink; a growable cache widens (at least
        doubling), keeping what the slots hold."""
        if columns < self.width:
            return
        if not self.growable or columns > self.capacity:
            raise ValueError(f"{columns} columns do not fit a slot of {self.capacity}")
        width = min(self.max_width, max(2 * self.width, _aligned(columns + 1)))
        keep = self.width - 1  # the old sink column holds nothing
        for tensors in (self.k, self.v):
            for i, old in enumerate(tensors):
                new = self._zeros(width)
                new[:, :, :keep] = old[:, :, :keep]
                tensors[i] = new
        self.width = width

    @property
    def in_use(self) -> int:
        return self.slots - len(self._free)

    def acquire(self) -> int | None:
        if not self._free:
            return None
        self._free.sort()
        return self._free.pop(0)

    def release(self, slot: int) -> None:
        if slot in self._free or not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is not in use")
        self._free.append(slot)

    def store(self, slot: int, caches: list[LayerCache]) -> None:
        """Copy a prefill's keys/values (per layer, [1, length, hidden]) to the start of `slot`."""
        self.ensure(max(c.length for c in caches))
        for k, v, cache in zip(self.k, self.v, caches):
            length = cache.length
            k[slot, :, :length] = cache.k[0, :length].view(length, self.heads, -1).transpose(0, 1)
            v[slot, :, :length] = cache.v[0, :length].view(length, self.heads, -1).transpose(0, 1)

    def slot_bytes(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in (*self.k, *self.v))

    def nbytes(self) -> int:
        return self.slot_bytes() * self.slots
