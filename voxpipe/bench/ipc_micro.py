"""Transport micro-benchmarks: a tiny request through a null-engine daemon, a ping,
and 10 s of audio moved between two processes through a shared-memory pool (only a
handle crosses the socket) against the same audio copied through ZeroMQ frames."""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from voxpipe.bench.daemon import BenchDaemon
from voxpipe.ipc import codec
from voxpipe.ipc.shm import PoolSpec, ShmPool, pool_path

TINY_TEXT = "Hi."
AUDIO_SECONDS = 10.0
SAMPLE_RATE = 22050
SLOT_BYTES = 64 * 1024
_SHM, _ZMQ, _QUIT, _ACK = b"s", b"z", b"q", b"k"


def null_roundtrip(daemon: BenchDaemon, n: int, warmup: int = 20) -> tuple[list[float], dict[str, list[float]],
                                                                            dict[str, float]]:
    """Tiny requests sent and answered one at a time: seconds each as the client saw it,
    the daemon's own timings of each (`total_s`: the frontend's receipt of the request to
    its sending of the result; `queued_s`: planned until a worker took it up; ...), and
    the CPU seconds each process role spent per request (the client included). Every
    process handles a request in turn, so their CPU adds up along its path."""
    roles = {p["pid"]: p.get("role", "?") for p in daemon.status().get("processes", []) if isinstance(p.get("pid"), int)}
    with daemon.client() as client:
        for _ in range(warmup):
            client.synthesize(TINY_TEXT)
        times: list[float] = []
        inside: dict[str, list[float]] = {}
        cpu_before, client_before = daemon.cpu_by_pid(), time.process_time()
        for _ in range(n):
            started = time.perf_counter()
            audio = client.synthesize(TINY_TEXT)
            times.append(time.perf_counter() - started)
            for key, value in audio.timings.items():
                inside.setdefault(key, []).append(float(value))
        cpu_after, client_cpu = daemon.cpu_by_pid(), time.process_time() - client_before
    per_request = {"client": client_cpu / n}
    for pid, cpu in cpu_after.items():
        role = roles.get(pid, "other")
        per_request[role] = per_request.get(role, 0.0) + (cpu - cpu_before.get(pid, cpu)) / n
    return times, inside, per_request


def ping(daemon: BenchDaemon, n: int, warmup: int = 20) -> list[float]:
    with daemon.client() as client:
        for _ in range(warmup):
            client.ping()
        return [client.ping() for _ in range(n)]


def _peer(endpoint: str, spec: PoolSpec) -> None:
    """The receiving process: take the audio by either route into its own memory, ack."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(endpoint)
    pool = ShmPool.attach(spec)
    try:
        while True:
            kind, body = sock.recv_multipart(copy=True)
            if kind == _QUIT:
                return
            if kind == _SHM:
                audio = pool.read(codec.decode(body))  # copy out of the pool, free the slots
            else:
                audio = np.frombuffer(body, dtype=np.float32)  # `body` is already this process's copy
            assert audio.size
            sock.send(_ACK)
    finally:
        pool.close()
        sock.close(0)
        ctx.term()


def shm_vs_zmq(n: int, warmup: int = 5) -> tuple[list[float], list[float], int]:
    """Round-trip seconds per transfer via the pool and via ZeroMQ frames, and the bytes moved."""
    audio = np.random.default_rng(0).standard_normal(int(AUDIO_SECONDS * SAMPLE_RATE)).astype(np.float32)
    slots = 2 * -(-audio.nbytes // SLOT_BYTES)
    spec = PoolSpec("bench", str(pool_path(f"bench{os.getpid()}", "micro")), SLOT_BYTES, slots)
    pool = ShmPool.create(spec)
    with tempfile.TemporaryDirectory(prefix="voxpipe-bench-") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'micro.sock'}"
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PAIR)
        sock.bind(endpoint)
        peer = multiprocessing.get_context("spawn").Process(target=_peer, args=(endpoint, spec), daemon=True)
        peer.start()
        try:
            def via_shm() -> None:
                handle = pool.put(audio, time.monotonic() + 60.0)
                sock.send_multipart([_SHM, codec.encode(handle)])
                sock.recv()

            def via_zmq() -> None:
                sock.send_multipart([_ZMQ, audio], copy=False)
                sock.recv()

            results = []
            for move in (via_shm, via_zmq):
                for _ in range(warmup):
                    move()
                times = []
                for _ in range(n):
                    started = time.perf_counter()
                    move()
                    times.append(time.perf_counter() - started)
                results.append(times)
            sock.send_multipart([_QUIT, b""])
            peer.join(10)
        finally:
            if peer.is_alive():
                peer.kill()
            sock.close(0)
            ctx.term()
            pool.close()
            pool.unlink()
    return results[0], results[1], audio.nbytes
