"""Dynamic batching in a worker (torch engine, CPU): chunks queued together run as one
batch, and every request still gets exactly its own audio."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxpipe.ipc.client import AsyncClient
from voxpipe.ipc.messages import Chunk, FamilyInputs
from voxpipe.stages.worker.batching import BatchBudget, take_batch
from voxpipe.stages.worker.chunk_queue import ChunkQueue
from tests.daemon_proc import Daemon, settled_status

pytest.importorskip("torch")

NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}
TEXTS = ["Hello there.", "Good morning to you all.", "Thank you very much.", "See you later today.",
         "The fox jumps over the dog.", "Please water the plants."]


def chunk(rid: str, n: int, voice: str = "joe", deadline: float = 1e12) -> Chunk:
    return Chunk(rid, 0, 1, voice, "piper", "x", FamilyInputs(list(range(n)), {}), None, False, deadline, 0, 0.0)


def test_take_batch_groups_by_voice_and_length_within_budget():
    queue = ChunkQueue()
    for item in [chunk("b", 52), chunk("c", 200), chunk("d", 48, voice="amy"), chunk("e", 55), chunk("f", 60)]:
        queue.push(item)
    batch = take_batch(chunk("a", 50), queue, BatchBudget(max_items=3, phonemes=1000), now=0.0)
    assert [c.request_id for c in batch] == ["a", "b", "e"]  # nearest lengths, same voice, 3 at most
    assert {c.request_id for c in queue} == {"c", "d", "f"}
    small = take_batch(chunk("a", 50), queue, BatchBudget(max_items=8, phonemes=100), now=0.0)
    assert [c.request_id for c in small] == ["a"]  # 2 x 60 padded phonemes would exceed 100


def test_budget_from_memory_and_shrinking():
    budget = BatchBudget.from_memory(8, free_bytes=10_000_000, bytes_per_phoneme=1000.0, ceiling=100_000)
    assert budget.phonemes == 5000  # half of free memory
    budget.shrink()
    assert budget.phonemes == 2500
    assert BatchBudget.from_memory(1, 10**9, 1.0, 8192).max_items == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_queued_chunks_run_as_one_batch_and_each_request_gets_its_own_audio(tmp_path):
    config = {"worker": {"engine": "torch", "max_batch": 8, "batch_wait_ms": 200.0, "credits": 8},
              "frontend": {"first_chunk": False}}
    with Daemon(tmp_path, workers=1, **config) as daemon:
        with daemon.client() as client:
            alone = {t: client.synthesize(t, "joe", **NOISE_OFF).samples for t in TEXTS}

        async def together() -> list:
            async with AsyncClient(daemon.endpoint) as client:
                return await asyncio.gather(*(client.synthesize(t, "joe", **NOISE_OFF) for t in TEXTS))

        results = asyncio.run(together())
        status = settled_status(daemon)  # a heartbeat has carried the batch counters
        stats = next(p["stats"] for p in status["processes"] if p["role"] == "worker")
    assert stats["batches"] < stats["batch_items"], stats  # some chunks shared a batch
    for text, audio in zip(TEXTS, results):
        assert len(audio.samples) == len(alone[text])
        assert np.max(np.abs(audio.samples.astype(np.int32) - alone[text].astype(np.int32))) <= 3
