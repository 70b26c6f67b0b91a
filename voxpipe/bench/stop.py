"""A daemon stopped under load: how soon is every client told?

    voxpipe bench stop [--clients 8] [--http-clients 2] [--ways budget,sigkill,frontend]
                       [--voices joe] [--json PATH]

For each way of stopping, starts a daemon of its own, puts `--clients` clients on it
(sync and async, half of each streaming) and `--http-clients` over its HTTP gateway
(OpenAI speech API), each sending requests one after another, and once every client has
one in flight stops the daemon:

- `budget`: SIGKILL a worker, wait for its replacement, again, until the supervisor's
  restart budget (`--restart-budget` restarts) is spent and it stops the daemon; the stop
  is the last kill. Clients should get the retriable `shutting_down`.
- `sigkill`: SIGKILL every process of the daemon at once (a vanished daemon). Clients
  should get the retriable `unavailable` (HTTP clients: their connection is lost).
- `hang`: SIGSTOP every process of the daemon (a hung daemon or machine), SIGKILLed once
  the clients are done. ZeroMQ clients should get `unavailable`; HTTP clients hang with
  the gateway, which is part of the daemon, until their own timeout.
- `frontend`: SIGKILL the frontend alone, which the supervisor restarts: not a stop, the
  control. No client should fail; each should have audio again.

Reports, per client, how it ended (its typed error, `connection_lost`, or `audio` for the
control) and the seconds from the stop to that, and per way the max and median; prints a
Markdown table and writes everything to JSON. The clients run with the client library's
defaults (`gone_after` included), as users' do.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from voxpipe.bench.daemon import BenchDaemon, DaemonSettings
from voxpipe.bench.stats import percentile
from voxpipe.ipc.client import AsyncClient, Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.shm import remove_stale_pools

WAYS = ("budget", "sigkill", "hang", "frontend")
AUDIO = "audio"  # how a client ended that got audio after the stop (the `frontend` way)
# Long enough that every client has one in flight when the daemon stops.
TEXT = ("The lighthouse keeper climbed the narrow stairs every evening at dusk, carrying a lamp, a book "
        "and a flask of tea, and from the gallery he watched the fishing boats come home across the bay "
        "while the gulls settled on the rocks below and the first stars came out over the headland.")
TOLD_WITHIN_S = 60.0  # a client not told by then counts as untold


@dataclass
class ClientOutcome:
    client: str  # e.g. "async-stream-3"
    served: int = 0  # requests that ended in audio
    code: str | None = None  # how it ended: its typed error, connection_lost, or `audio`; None: never
    told_s: float | None = None  # seconds from the stop to that (negative: before the stop)


@dataclass
class StopRun:
    way: str
    clients: list[ClientOutcome] = field(default_factory=list)
    kills: int = 0
    stop_at: float = 0.0  # time.monotonic() of the stop

    @property
    def told(self) -> list[float]:
        """Seconds from the stop to each client's end, of those that ended after it."""
        return [c.told_s for c in self.clients if c.told_s is not None and c.told_s >= 0]

    def ok(self) -> bool:
        """Every client told after the stop (an error; the control: audio again)."""
        wanted = (lambda code: code == AUDIO) if self.way == "frontend" else (lambda code: code not in (None, AUDIO))
        return all(wanted(c.code) and c.told_s is not None and c.told_s >= 0 for c in self.clients)

    def summary(self) -> dict:
        told = self.told
        codes: dict[str, int] = {}
        for c in self.clients:
            codes[c.code or "untold"] = codes.get(c.code or "untold", 0) + 1
        return {"way": self.way, "clients": len(self.clients), "told": len(told), "kills": self.kills,
                "codes": codes, "p50_s": percentile(told, 50) if told else None, "max_s": max(told) if told else None,
                "early": sum(1 for c in self.clients if c.told_s is not None and c.told_s < 0), "ok": self.ok()}


def table(runs: list[StopRun]) -> str:
    def s(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"
    lines = ["| stop | clients | told | how they ended | p50 s | max s |", "|---|---:|---:|---|---:|---:|"]
    for run in runs:
        row = run.summary()
        codes = ", ".join(f"{k} {v}" for k, v in sorted(row["codes"].items()))
        lines.append(f"| {run.way} | {row['clients']} | {row['told']} | {codes} "
                     f"| {s(row['p50_s'])} | {s(row['max_s'])} |")
    return "\n".join(lines)


class _Stop:
    """The moment of the stop, shared by the clients (they time their ends from it);
    `control`: the frontend way, where a client ends at its first audio after the stop."""

    def __init__(self, control: bool) -> None:
        self.at: float | None = None
        self.control = control

    def served(self, outcome: ClientOutcome) -> bool:
        """Count an answer with audio; True when it ends the client (the control's first
        request sent after the stop, or one in flight across it, that came back)."""
        outcome.served += 1
        if self.control and self.at is not None and time.monotonic() > self.at:
            _ended(outcome, AUDIO, self)
            return True
        return False


def _sync_client(endpoint: str, voice: str, streaming: bool, outcome: ClientOutcome, stop: _Stop) -> None:
    try:
        with Client(endpoint, timeout=TOLD_WITHIN_S * 2) as client:
            while True:
                if streaming:
                    for _ in client.stream(TEXT, voice):
                        pass
                else:
                    client.synthesize(TEXT, voice)
                if stop.served(outcome):
                    return
    except VoxpipeError as exc:
        _ended(outcome, exc.code, stop)


async def _async_client(client: AsyncClient, voice: str, streaming: bool, outcome: ClientOutcome,
                        stop: _Stop) -> None:
    try:
        while True:
            if streaming:
                async for _ in client.stream(TEXT, voice):
                    pass
            else:
                await client.synthesize(TEXT, voice)
            if stop.served(outcome):
                return
    except VoxpipeError as exc:
        _ended(outcome, exc.code, stop)


def _http_client(port: int, voice: str, outcome: ClientOutcome, stop: _Stop) -> None:
    """OpenAI speech requests over the daemon's gateway; an error answer ends it with its
    code, a cut connection (the gateway died mid-answer) with `connection_lost`."""
    body = json.dumps({"model": "voxpipe", "voice": voice, "input": TEXT, "response_format": "pcm"})
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TOLD_WITHIN_S * 2)
        try:
            conn.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            _ended(outcome, "connection_lost", stop)
            return
        finally:
            conn.close()
        if reply.status >= 400:
            try:
                code = str(json.loads(data)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = f"http_{reply.status}"
            _ended(outcome, code, stop)
            return
        if stop.served(outcome):
            return


def _ended(outcome: ClientOutcome, code: str, stop: _Stop) -> None:
    now = time.monotonic()
    outcome.code = code
    outcome.told_s = now - stop.at if stop.at is not None else -1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _workers(daemon: BenchDaemon) -> list[dict]:
    return [p for p in daemon.status()["processes"] if p["role"] == "worker"]


def _all_in_flight(daemon: BenchDaemon, clients: int) -> bool:
    try:
        return daemon.status()["active_requests"] >= clients
    except VoxpipeError:
        return False


def _stop_by_budget(daemon: BenchDaemon, stop: _Stop, run: StopRun) -> None:
    """Kill a worker, wait for its replacement, until the daemon exits; the stop is the
    kill after which it did (`stop.at`: the latest kill)."""
    assert daemon.proc is not None
    while daemon.proc.poll() is None:
        try:
            victim = next(w for w in _workers(daemon) if w.get("alive") and w.get("pid"))
        except (VoxpipeError, StopIteration):
            time.sleep(0.05)
            continue
        stop.at = time.monotonic()  # errors are timed from the latest kill
        os.kill(victim["pid"], signal.SIGKILL)
        run.kills += 1
        deadline = stop.at + 30.0
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            try:
                back = [w for w in _workers(daemon) if w.get("alive") and w.get("pid") and w["pid"] != victim["pid"]]
            except VoxpipeError:
                back = []
            if back and len(back) == len(_workers(daemon)):
                break  # replaced: the next kill
            time.sleep(0.05)


def _stop_by_sigkill(daemon: BenchDaemon, stop: _Stop, run: StopRun) -> None:
    assert daemon.proc is not None
    stop.at = time.monotonic()
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    run.kills += 1
    daemon.proc.wait(10)


def _stop_by_sigstop(daemon: BenchDaemon, stop: _Stop, run: StopRun) -> None:
    assert daemon.proc is not None
    stop.at = time.monotonic()
    os.killpg(daemon.proc.pid, signal.SIGSTOP)  # the finally of stop_under_load kills it


def _kill_frontend(daemon: BenchDaemon, stop: _Stop, run: StopRun) -> None:
    frontend = next(p for p in daemon.status()["processes"] if p["role"] == "frontend")
    stop.at = time.monotonic()
    os.kill(frontend["pid"], signal.SIGKILL)
    run.kills += 1


STOPS = {"budget": _stop_by_budget, "sigkill": _stop_by_sigkill, "hang": _stop_by_sigstop, "frontend": _kill_frontend}


async def stop_under_load(way: str, workdir: Path, clients: int = 8, workers: int = 2, voices: list[str] | None = None,
                          restart_budget: int = 2, engine: str = "onnx", http_clients: int = 0) -> StopRun:
    if way not in WAYS:
        raise ValueError(f"way must be one of {', '.join(WAYS)}, not {way!r}")
    voices = voices or ["joe"]
    port = free_port() if http_clients else 0
    config = (f"supervisor.restart_budget = {restart_budget}", "supervisor.restart_window_s = 600.0",
              *([f'http.bind = "127.0.0.1:{port}"'] if port else []))
    daemon = BenchDaemon(workdir / way, DaemonSettings(engine=engine, workers=workers, config=config)).start()
    run, stop = StopRun(way), _Stop(control=way == "frontend")
    # A thread for every sync and HTTP client, and room for the status checks and the stop.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(clients + http_clients + 4))
    try:
        async_client = await AsyncClient(daemon.endpoint, timeout=TOLD_WITHIN_S * 2).connect()
        tasks = []
        for i in range(clients):
            sync, streaming, voice = i % 4 >= 2, i % 2 == 0, voices[i % len(voices)]
            outcome = ClientOutcome(f"{'sync' if sync else 'async'}-{'stream' if streaming else 'whole'}-{i}")
            run.clients.append(outcome)
            if sync:
                tasks.append(asyncio.create_task(asyncio.to_thread(_sync_client, daemon.endpoint, voice, streaming,
                                                                   outcome, stop)))
            else:
                tasks.append(asyncio.create_task(_async_client(async_client, voice, streaming, outcome, stop)))
        for i in range(http_clients):
            outcome = ClientOutcome(f"http-{i}")
            run.clients.append(outcome)
            tasks.append(asyncio.create_task(asyncio.to_thread(_http_client, port, voices[i % len(voices)],
                                                               outcome, stop)))
        # Stop once every client still going has a request in flight (one that failed
        # before the stop, e.g. `busy`, counts as early), or after a minute regardless.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not await asyncio.to_thread(
                _all_in_flight, daemon, sum(c.code is None for c in run.clients)):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(STOPS[way], daemon, stop, run)
        run.stop_at = stop.at or 0.0
        await asyncio.wait(tasks, timeout=TOLD_WITHIN_S)
        for task in tasks:
            task.cancel()  # untold: its outcome keeps code None
        # A sync client still waiting in its thread ends with its own timeout.
        await async_client.close()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            os.killpg(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(10)
        remove_stale_pools()  # a killed daemon's shared memory: nobody else unlinks it
    return run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=8, help="clients on the daemon (default 8): sync and "
                        "async, half of each streaming")
    parser.add_argument("--http-clients", type=int, default=0,
                        help="clients over the daemon's HTTP gateway as well (OpenAI speech API; default 0)")
    parser.add_argument("--ways", default="budget,sigkill,frontend",
                        help=f"how to stop it, comma-separated: {', '.join(WAYS)} (default: all but hang)")
    parser.add_argument("--voices", default="joe", help="comma-separated voices the clients take in turn (default joe)")
    parser.add_argument("--workers", type=int, default=2, help="synthesis workers (default 2)")
    parser.add_argument("--engine", default="onnx", help="the workers' engine (default onnx)")
    parser.add_argument("--restart-budget", type=int, default=2,
                        help="restarts the supervisor allows before it stops (the budget way kills one more)")
    parser.add_argument("--json", type=Path, default=Path("results/bench-stop.json"),
                        help="where to write the per-client figures (default results/bench-stop.json)")


def run(args: argparse.Namespace) -> int:
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        print(f"voxpipe bench stop: unknown way(s) {', '.join(unknown)}; choose from {', '.join(WAYS)}",
              file=sys.stderr)
        return 2
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="voxpipe-bench-stop-") as tmp:
        for way in ways:
            runs.append(asyncio.run(stop_under_load(way, Path(tmp), args.clients, args.workers, voices,
                                                    args.restart_budget, args.engine, args.http_clients)))
    print(table(runs))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": [{**r.summary(), "per_client": [asdict(c) for c in r.clients]}
                                              for r in runs]}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r.ok() for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench stop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
