"""Dynamic batching in a worker: which queued chunks to synthesize together.

A batch is one voice on one engine. Its size is bounded by a budget of padded phonemes
that comes from the free memory the engine measures (so a GPU with room takes more),
and by how unequal the lengths are (padding is wasted work). When the engine runs out
of memory anyway, the budget shrinks and the batch is split, not failed.
"""
from __future__ import annotations

from dataclasses import dataclass

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.worker.chunk_queue import ChunkQueue

MIN_BUDGET = 64  # phonemes: below this a batch is one chunk anyway


@dataclass
class BatchBudget:
    max_items: int  # the engine's (and config's) batch limit; 1 = no batching
    phonemes: int  # padded phonemes (items x longest) one batch may hold
    max_pad_ratio: float = 1.6  # longest / shortest chunk in a batch

    def shrink(self) -> None:
        self.phonemes = max(MIN_BUDGET, self.phonemes // 2)

    @classmethod
    def from_memory(cls, max_items: int, free_bytes: int | None, bytes_per_phoneme: float | None,
                    ceiling: int, share: float = 0.5) -> "BatchBudget":
        """Budget from measured free memory; `share` leaves room for everything else."""
        if max_items <= 1 or not free_bytes or not bytes_per_phoneme:
            return cls(max(1, max_items), ceiling)
        return cls(max_items, int(max(MIN_BUDGET, min(ceiling, free_bytes * share / bytes_per_phoneme))))


def padded_cost(chunks: list[Chunk]) -> int:
    return len(chunks) * max(len(c.inputs.ids) for c in chunks)


def take_batch(first: Chunk, queue: ChunkQueue, budget: BatchBudget, now: float) -> list[Chunk]:
    """`first` plus queued chunks that can share its batch: same voice, engine and
    speaker, live, close in length; nearest lengths first so padding stays small."""
    batch = [first]
    if budget.max_items <= 1:
        return batch
    length = len(first.inputs.ids)

    def compatible(chunk: Chunk) -> bool:
        if (chunk.voice, chunk.engine) != (first.voice, first.engine) or chunk.deadline <= now:
            return False
        lengths = [len(c.inputs.ids) for c in batch] + [len(chunk.inputs.ids)]
        return max(lengths) <= budget.max_pad_ratio * min(lengths) and padded_cost([*batch, chunk]) <= budget.phonemes

    for chunk in sorted(queue, key=lambda c: abs(len(c.inputs.ids) - length)):
        if len(batch) >= budget.max_items:
            break
        if compatible(chunk):
            batch.append(chunk)
    for chunk in batch[1:]:
        queue.remove(chunk)
    return batch
