"""The frontend's chunk scheduler: one central priority queue and per-worker credits.

Workers pull in effect: a worker holds at most `credits` chunks, so a new request's
first chunk never waits behind a long private backlog, and the chunks a dead worker
held are known exactly and can be sent again elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.worker.chunk_queue import ChunkQueue


@dataclass
class WorkerSlot:
    name: str
    credits: int
    ready: bool = False
    voices: set[str] = field(default_factory=set)
    in_flight: dict[tuple[str, int], Chunk] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.credits - len(self.in_flight) if self.ready else 0


class Scheduler:
    def __init__(self, max_queued: int) -> None:
        self.queue = ChunkQueue()
        self.max_queued = max_queued
        self.workers: dict[str, WorkerSlot] = {}

    def has_room(self, chunks: int) -> bool:
        return len(self.queue) + chunks <= self.max_queued

    def submit(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self.queue.push(chunk)

    def worker_state(self, name: str, credits: int, voices: list[str], ready: bool) -> None:
        slot = self.workers.setdefault(name, WorkerSlot(name, credits))
        slot.credits, slot.voices, slot.ready = credits, set(voices), ready

    def dispatch(self) -> list[tuple[str, Chunk]]:
        """Assign queued chunks to workers with free credits; returns (worker, chunk) pairs."""
        sent: list[tuple[str, Chunk]] = []
        while len(self.queue):
            free = [w for w in self.workers.values() if w.free > 0]
            if not free:
                break
            chunk = self.queue.pop()
            assert chunk is not None
            # Prefer a worker that already holds the voice, then the least loaded one.
            worker = min(free, key=lambda w: (chunk.voice not in w.voices, len(w.in_flight), w.name))
            worker.in_flight[(chunk.request_id, chunk.seq)] = chunk
            worker.voices.add(chunk.voice)  # it will load it now
            sent.append((worker.name, chunk))
        return sent

    def done(self, worker: str, request_id: str, seq: int) -> Chunk | None:
        slot = self.workers.get(worker)
        return slot.in_flight.pop((request_id, seq), None) if slot else None

    def worker_lost(self, name: str) -> list[Chunk]:
        """A worker died or hung: forget it and return the chunks it held."""
        slot = self.workers.pop(name, None)
        return list(slot.in_flight.values()) if slot else []

    def drop(self, request_id: str) -> list[str]:
        """Forget a request's queued chunks; returns the workers holding some of its chunks,
        to be told to drop them (their credits come back with each ChunkDone)."""
        self.queue.drop(request_id)
        return [slot.name for slot in self.workers.values() if any(k[0] == request_id for k in slot.in_flight)]

    def stats(self) -> dict:
        return {"queued": len(self.queue),
                "workers": {w.name: {"in_flight": len(w.in_flight), "credits": w.credits, "ready": w.ready,
                                     "voices": sorted(w.voices)} for w in self.workers.values()}}
