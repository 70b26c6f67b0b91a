"""Soak test: a mixed load with worker and merger kills against a running daemon.

Requests mix the given voices (Piper and GPT-SoVITS alike), seeded and unseeded,
streamed and whole. Every request must end in audio or a typed error (none lost), and
every answer must equal, within 4 int16 steps, a re-render afterwards by the seed its
result reports (a seam: a replay after a kill that rendered other audio). Memory and
shared memory must come back to where they started. The test suite runs a short
version; operators run a long one against a test daemon (it kills that daemon's stages):

    voxpipe bench soak --endpoint ipc:///tmp/vp/vp.sock --voices joe,gsv-tiny \
        --requests 1000 --worker-kills 10 --merger-kills 2

(or by time: `--duration 3600 --kill-every 60`). It prints a JSON report and exits 1 if
a request was lost or an answer has a seam.
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

import numpy as np

from voxpipe.bench.daemon import fresh_status
from voxpipe.ipc.client import AsyncClient, AudioFragment, Client, run_async
from voxpipe.ipc.errors import ERROR_CODES, VoxpipeError

TEXTS = ["Hello there.", "Good morning, and welcome back.", "The quick brown fox jumps over the lazy dog.",
         "Please remember to water the plants before you leave, and lock the door behind you.",
         "If the weather stays clear tomorrow, we will hike up to the lake and have lunch by the bridge."]
SEAM_STEPS = 4  # int16 steps a sample may differ by (thread counts change the order of sums)


@dataclass
class Answer:
    """One request that ended in audio, kept to check it against a re-render."""

    voice: str
    text: str
    samples: np.ndarray
    seed: int | None


@dataclass
class SoakReport:
    requests: int = 0
    answered_audio: int = 0
    answered_error: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # no answer at all, or an untyped failure
    kills: int = 0
    worker_kills: int = 0
    merger_kills: int = 0
    seeded: int = 0  # requests that named a seed (the rest: the daemon drew one)
    streamed: int = 0
    by_voice: dict[str, int] = field(default_factory=dict)
    checked: int = 0  # answers re-rendered by their reported seed
    seams: int = 0  # answers that differ from their re-render by more than SEAM_STEPS
    unchecked: int = 0  # answers without a reported seed, or whose re-render failed
    rss_before: dict[str, int] = field(default_factory=dict)
    rss_after: dict[str, int] = field(default_factory=dict)
    shm_free_before: dict[str, int] = field(default_factory=dict)
    shm_free_after: dict[str, int] = field(default_factory=dict)


def same_audio(a: np.ndarray, b: np.ndarray, steps: int = SEAM_STEPS) -> bool:
    a, b = np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)
    return len(a) == len(b) and (len(a) == 0 or int(np.abs(a - b).max()) <= steps)


def _processes(endpoint: str, since: float | None = None, timeout: float = 60.0) -> list[dict]:
    """The daemon's processes; with `since` (time.monotonic()), as the stages saw them
    after it (an idle stage's figures can be up to a second old: no fixed wait will do)."""
    with Client(endpoint) as client:
        if since is None:
            return client.status()["processes"]
        return fresh_status(client.status, since, timeout)[0]["processes"]


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


def _snapshot(endpoint: str, since: float | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """RSS of the long-lived stages (frontend, merger) and free slots of every pool (with
    `since`: as the stages saw them after that time)."""
    rss, free = {}, {}
    for proc in _processes(endpoint, since):
        if proc["role"] in ("frontend", "merger") and proc.get("pid"):
            rss[proc["name"]] = rss_anon(proc["pid"])
        pool = proc.get("stats", {}).get("pool")
        if pool:
            free[proc["name"]] = pool["free"]
    return rss, free


class Load:
    """Which request comes next, and when the load is over: after `requests` requests,
    or at `stop_at` (time.monotonic()), whichever is given."""

    def __init__(self, requests: int | None, stop_at: float | None) -> None:
        self.requests, self.stop_at, self.issued = requests, stop_at, 0

    def take(self) -> bool:
        if self.requests is not None and self.issued >= self.requests:
            return False
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            return False
        self.issued += 1
        return True

    def over(self) -> bool:
        return (self.requests is not None and self.issued >= self.requests) or (
            self.stop_at is not None and time.monotonic() >= self.stop_at)


async def _one(client: AsyncClient, rng: random.Random, voices: list[str], report: SoakReport) -> Answer | None:
    voice = rng.choice(voices)
    text = " ".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3)))
    seed = rng.randrange(1 << 30) if rng.random() < 0.5 else None
    report.requests += 1
    report.seeded += seed is not None
    report.by_voice[voice] = report.by_voice.get(voice, 0) + 1
    try:
        if rng.random() < 0.5:
            audio = await client.synthesize(text, voice, seed=seed)
            samples, reported = audio.samples, audio.seed
        else:
            report.streamed += 1
            pieces, reported = [], None
            async for item in client.stream(text, voice, seed=seed):
                if isinstance(item, AudioFragment):
                    pieces.append(item.samples)
                else:
                    reported = getattr(item, "seed", None)
            samples = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    except VoxpipeError as exc:
        if exc.code in ERROR_CODES and exc.code != "unavailable":
            report.answered_error[exc.code] = report.answered_error.get(exc.code, 0) + 1
        else:
            report.lost += 1
        return None
    if not len(samples):
        report.lost += 1
        return None
    report.answered_audio += 1
    return Answer(voice, text, samples, reported)


async def _client_loop(endpoint: str, load: Load, voices: list[str], report: SoakReport, seed: int,
                       answers: list[Answer]) -> None:
    rng = random.Random(seed)
    async with AsyncClient(endpoint, timeout=120) as client:
        while load.take():
            answer = await _one(client, rng, voices, report)
            if answer is not None:
                answers.append(answer)


def _kill(endpoint: str, role: str, rng: random.Random) -> bool:
    stages = [p for p in _processes(endpoint) if p["role"] == role and p.get("alive") and p.get("pid")]
    if not stages:
        return False
    os.kill(rng.choice(stages)["pid"], signal.SIGKILL)
    return True


async def _killer(endpoint: str, load: Load, report: SoakReport, worker_kills: int, merger_kills: int,
                  kill_every: float) -> None:
    """Kills spread evenly over the requests (counts given), or one worker every
    `kill_every` seconds (by time)."""
    rng = random.Random(7)
    if load.requests is not None:
        total = load.requests
        plan = sorted([(total * (i + 1) // (worker_kills + 1), "worker") for i in range(worker_kills)] +
                      [(total * (i + 1) // (merger_kills + 1) + 1, "merger") for i in range(merger_kills)])
    else:
        plan = []
    next_by_time = time.monotonic() + kill_every if kill_every > 0 else None
    while not load.over():
        await asyncio.sleep(0.05)
        due = []
        while plan and load.issued >= plan[0][0]:
            due.append(plan.pop(0)[1])
        if next_by_time is not None and time.monotonic() >= next_by_time:
            next_by_time += kill_every
            due.append("worker")
        for role in due:
            if await asyncio.to_thread(_kill, endpoint, role, rng):
                report.kills += 1
                report.worker_kills += role == "worker"
                report.merger_kills += role == "merger"
                if load.requests is not None:
                    await _settle(endpoint, busy_ok=True)  # the stage is back before the next kill


async def _check(endpoint: str, answers: list[Answer], report: SoakReport, concurrency: int) -> None:
    """Render every answer again, undisturbed, by the seed it reported; count seams."""
    pending = list(answers)

    async def checker() -> None:
        async with AsyncClient(endpoint, timeout=120) as client:
            while pending:
                answer = pending.pop()
                if answer.seed is None:
                    report.unchecked += 1
                    continue
                try:
                    again = await client.synthesize(answer.text, answer.voice, seed=answer.seed)
                except VoxpipeError:
                    report.unchecked += 1
                    continue
                report.checked += 1
                report.seams += not same_audio(answer.samples, again.samples)

    await asyncio.gather(*(checker() for _ in range(concurrency)))


async def _settle(endpoint: str, timeout: float = 60.0, busy_ok: bool = False) -> None:
    """Wait until the daemon is ready (every stage back) and, unless `busy_ok`, idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = await asyncio.to_thread(_status, endpoint)
        except VoxpipeError:  # no frontend for a moment
            status = {}
        stages_up = status.get("ready") and all(p.get("alive") for p in status.get("processes", []))
        if stages_up and (busy_ok or (status["active_requests"] == 0 and status["queues"]["queued"] == 0)):
            return
        await asyncio.sleep(0.2)


def _status(endpoint: str) -> dict:
    with Client(endpoint) as client:
        return client.status()


async def soak(endpoint: str, duration: float | None = None, concurrency: int = 8, kill_every: float = 0.0, *,
               requests: int | None = None, worker_kills: int = 0, merger_kills: int = 0,
               voices: list[str] | None = None, check: bool = True) -> SoakReport:
    """Load by count (`requests`) or by time (`duration` seconds), with kills spread over
    the requests (`worker_kills`, `merger_kills`) or every `kill_every` seconds; then,
    with `check`, every answer is rendered again by its reported seed."""
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    report = SoakReport()
    report.rss_before, report.shm_free_before = _snapshot(endpoint)
    load = Load(requests, None if duration is None else time.monotonic() + duration)
    answers: list[Answer] = []
    tasks = [_client_loop(endpoint, load, voices or ["joe"], report, seed, answers) for seed in range(concurrency)]
    if kill_every > 0 or worker_kills or merger_kills:
        tasks.append(_killer(endpoint, load, report, worker_kills, merger_kills, kill_every))
    await asyncio.gather(*tasks)
    await _settle(endpoint)
    if check:
        await _check(endpoint, answers, report, concurrency)
    # Every answer is in: pool figures made from now on count every slot freed for them.
    report.rss_after, report.shm_free_after = await asyncio.to_thread(_snapshot, endpoint, time.monotonic())
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="the daemon's endpoint (default: the default socket)")
    parser.add_argument("--requests", type=int, help="send this many requests (instead of --duration)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 600 unless --requests)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending at once (default 8)")
    parser.add_argument("--voices", default="joe",
                        help="comma-separated voices to mix, e.g. a Piper and a GPT-SoVITS voice (default joe)")
    parser.add_argument("--worker-kills", type=int, default=0, help="workers to SIGKILL, spread over --requests")
    parser.add_argument("--merger-kills", type=int, default=0, help="mergers to SIGKILL, spread over --requests")
    parser.add_argument("--kill-every", type=float, default=None,
                        help="seconds between worker kills, by time (default 30 with --duration, else none)")
    parser.add_argument("--no-check", action="store_true", help="skip re-rendering every answer by its seed")


def run(args: argparse.Namespace) -> int:
    from voxpipe.ipc.sockets import default_endpoint

    duration = args.duration if args.duration is not None or args.requests is not None else 600.0
    kill_every = args.kill_every if args.kill_every is not None else (30.0 if args.requests is None else 0.0)
    if (args.worker_kills or args.merger_kills) and args.requests is None:
        print("voxpipe bench soak: --worker-kills and --merger-kills need --requests", file=sys.stderr)
        return 2
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    report = run_async(soak(args.endpoint or default_endpoint(), duration if args.requests is None else None,
                            args.concurrency, kill_every, requests=args.requests, worker_kills=args.worker_kills,
                            merger_kills=args.merger_kills, voices=voices, check=not args.no_check))
    print(json.dumps(asdict(report), indent=2))
    return 1 if report.lost or report.seams else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
