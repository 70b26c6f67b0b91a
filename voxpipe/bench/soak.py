"""Soak test: a mixed load with worker kills at intervals against a running daemon.

Every request must end in audio or a typed error (none lost), and memory and shared
memory must come back to where they started. The test suite runs a short version;
operators run a long one against a test daemon (it kills that daemon's workers):

    voxpipe bench soak --endpoint ipc:///tmp/vp/vp.sock --duration 3600 --kill-every 60

It prints a JSON report and exits 1 if a request was lost.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

from voxpipe.ipc.client import AsyncClient, Client, run_async
from voxpipe.ipc.errors import ERROR_CODES, VoxpipeError

TEXTS = ["Hello there.", "Good morning, and welcome back.", "The quick brown fox jumps over the lazy dog.",
         "Please remember to water the plants before you leave, and lock the door behind you.",
         "If the weather stays clear tomorrow, we will hike up to the lake and have lunch by the bridge."]


@dataclass
class SoakReport:
    requests: int = 0
    answered_audio: int = 0
    answered_error: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # no answer at all, or an untyped failure
    kills: int = 0
    rss_before: dict[str, int] = field(default_factory=dict)
    rss_after: dict[str, int] = field(default_factory=dict)
    shm_free_before: dict[str, int] = field(default_factory=dict)
    shm_free_after: dict[str, int] = field(default_factory=dict)


def _processes(endpoint: str) -> list[dict]:
    with Client(endpoint) as client:
        return client.status()["processes"]


def rss_anon(pid: int) -> int:
    """Private resident memory (RssAnon): the shared-memory pools' pages, which count in
    VmRSS as a process touches more slots, are not the process's own."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _snapshot(endpoint: str) -> tuple[dict[str, int], dict[str, int]]:
    """RSS of the long-lived stages (frontend, merger) and free slots of every pool."""
    rss, free = {}, {}
    for proc in _processes(endpoint):
        if proc["role"] in ("frontend", "merger") and proc.get("pid"):
            rss[proc["name"]] = rss_anon(proc["pid"])
        pool = proc.get("stats", {}).get("pool")
        if pool:
            free[proc["name"]] = pool["free"]
    return rss, free


async def _client_loop(endpoint: str, stop_at: float, report: SoakReport, seed: int) -> None:
    rng = random.Random(seed)
    async with AsyncClient(endpoint, timeout=60) as client:
        while time.monotonic() < stop_at:
            report.requests += 1
            text = " ".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3)))
            try:
                if rng.random() < 0.5:
                    audio = await client.synthesize(text, "joe")
                    ok = len(audio.samples) > 0
                else:
                    ok = False
                    async for item in client.stream(text, "joe"):
                        ok = True
                report.answered_audio += ok
                report.lost += not ok
            except VoxpipeError as exc:
                if exc.code in ERROR_CODES and exc.code != "unavailable":
                    report.answered_error[exc.code] = report.answered_error.get(exc.code, 0) + 1
                else:
                    report.lost += 1


async def _killer(endpoint: str, stop_at: float, every: float, report: SoakReport) -> None:
    while time.monotonic() + every < stop_at:
        await asyncio.sleep(every)
        workers = [p for p in await asyncio.to_thread(_processes, endpoint) if p["role"] == "worker" and p["alive"]]
        if workers:
            os.kill(random.choice(workers)["pid"], signal.SIGKILL)
            report.kills += 1


async def _settle(endpoint: str, timeout: float = 30.0) -> None:
    """Wait until the daemon is ready and idle again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Client(endpoint) as client:
            status = client.status()
        if status["ready"] and status["active_requests"] == 0 and status["queues"]["queued"] == 0:
            return
        await asyncio.sleep(0.2)


async def soak(endpoint: str, duration: float, concurrency: int, kill_every: float) -> SoakReport:
    report = SoakReport()
    report.rss_before, report.shm_free_before = _snapshot(endpoint)
    stop_at = time.monotonic() + duration
    tasks = [_client_loop(endpoint, stop_at, report, seed) for seed in range(concurrency)]
    if kill_every > 0:
        tasks.append(_killer(endpoint, stop_at, kill_every, report))
    await asyncio.gather(*tasks)
    await _settle(endpoint)
    await asyncio.sleep(1.5)  # a heartbeat or two, so pool figures are current
    report.rss_after, report.shm_free_after = _snapshot(endpoint)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="the daemon's endpoint (default: the default socket)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending at once (default 8)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between worker kills (0: none)")


def run(args: argparse.Namespace) -> int:
    from voxpipe.ipc.sockets import default_endpoint

    report = run_async(soak(args.endpoint or default_endpoint(), args.duration, args.concurrency, args.kill_every))
    print(json.dumps(asdict(report), indent=2))
    return 1 if report.lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
