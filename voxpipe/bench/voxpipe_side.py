"""voxpipe under measurement: one streamed request at a time, or N concurrent clients."""
from __future__ import annotations

import asyncio
import time
from typing import Iterator

from voxpipe.bench.results import VOXPIPE, Sample, ThroughputRun
from voxpipe.bench.texts import BenchText
from voxpipe.ipc.client import AsyncClient, Client, run_async


def measure(client: Client, text: BenchText, voice: str = "joe") -> Sample:
    """Stream one request; first audio is when its first fragment arrived."""
    started = time.monotonic()
    first: float | None = None
    samples, rate = 0, 1
    for fragment in client.stream(text.text, voice):
        if first is None:
            first = fragment.received_at
        samples += len(fragment.samples)
        rate = fragment.sample_rate
    done = time.monotonic()
    return Sample(VOXPIPE, text.cls, text.chars, done - started, (first or done) - started, samples / rate)


def measure_first_audio(client: Client, text: BenchText, voice: str = "joe") -> Sample:
    """Stream one request until its first fragment, then cancel it (the rest could be an
    hour of audio): its latency and audio are those of that first fragment."""
    started = time.monotonic()
    stream = client.stream(text.text, voice)
    try:
        fragment = next(iter(stream))
    finally:
        stream.close()
    first = fragment.received_at - started
    return Sample(VOXPIPE, text.cls, text.chars, first, first, len(fragment.samples) / fragment.sample_rate)


async def _throughput(endpoint: str, load: list[BenchText], clients: int, voice: str) -> ThroughputRun:
    todo: Iterator[BenchText] = iter(load)
    latencies: list[float] = []
    audio_s = 0.0
    connections = [await AsyncClient(endpoint).connect() for _ in range(clients)]

    async def serve(client: AsyncClient) -> None:
        nonlocal audio_s
        for text in todo:  # one shared iterator: each client takes the next text when free
            started = time.monotonic()
            audio = await client.synthesize(text.text, voice)
            latencies.append(time.monotonic() - started)
            audio_s += audio.duration

    try:
        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(serve(c) for c in connections))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
    finally:
        for client in connections:
            await client.close()
    return ThroughputRun(VOXPIPE, "", clients, len(load), wall, audio_s, latencies, client_cpu_s=cpu)


def throughput(endpoint: str, load: list[BenchText], clients: int, config: str, voice: str = "joe") -> ThroughputRun:
    run = run_async(_throughput(endpoint, load, clients, voice))
    run.config = config
    return run
