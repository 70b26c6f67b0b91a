"""Priority queue of chunks: first chunks before later ones (first audio comes fast),
then oldest request first, then sequence order. Used by the frontend's scheduler and by
each worker's local queue."""
from __future__ import annotations

import heapq
import itertools
from typing import Callable, Iterator

from voxpipe.ipc.messages import Chunk


def chunk_priority(chunk: Chunk) -> tuple[int, float, int]:
    return (0 if chunk.seq == 0 else 1, chunk.submitted_at, chunk.seq)


class ChunkQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, int], int, Chunk]] = []
        self._order = itertools.count()

    def push(self, chunk: Chunk) -> None:
        heapq.heappush(self._heap, (chunk_priority(chunk), next(self._order), chunk))

    def pop(self, accept: Callable[[Chunk], bool] | None = None) -> Chunk | None:
        """The best chunk that `accept` takes (any, if None), or None."""
        if accept is None:
            return heapq.heappop(self._heap)[2] if self._heap else None
        for index, entry in enumerate(sorted(self._heap)):
            if accept(entry[2]):
                self._heap.remove(entry)
                heapq.heapify(self._heap)
                return entry[2]
        return None

    def peek(self) -> Chunk | None:
        return self._heap[0][2] if self._heap else None

    def remove(self, chunk: Chunk) -> None:
        self._heap = [e for e in self._heap if e[2] is not chunk]
        heapq.heapify(self._heap)

    def drop(self, request_id: str) -> list[Chunk]:
        """Remove and return a request's queued chunks."""
        dropped = [e[2] for e in self._heap if e[2].request_id == request_id]
        if dropped:
            self._heap = [e for e in self._heap if e[2].request_id != request_id]
            heapq.heapify(self._heap)
        return dropped

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Chunk]:
        return (entry[2] for entry in self._heap)
