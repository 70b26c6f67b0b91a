"""Overload benchmark: at a multiple of what the daemon's queues hold, how fast do the
`busy` answers come back, and do the accepted requests still finish?

    voxpipe bench overload [--capacity 32] [--factor 3] [--engine onnx] [--workers 2]

Starts its own daemon with `limits.max_active_requests = capacity`, sends
capacity x factor requests at once over one client socket, and prints busy-answer
latency percentiles, how many were accepted and finished, and a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.bench.daemon import BenchDaemon, DaemonSettings
from voxpipe.bench.stats import percentile
from voxpipe.ipc.client import AsyncClient, run_async
from voxpipe.ipc.errors import VoxpipeError

TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class OverloadResult:
    capacity: int
    sent: int
    busy_s: list[float] = field(default_factory=list)  # from each request's send to its `busy` answer
    finished_s: list[float] = field(default_factory=list)  # time to each accepted request's audio
    other_errors: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        def ms(values: list[float], q: float) -> str:
            return f"{percentile(values, q) * 1000:.1f} ms" if values else "-"
        return "\n".join([
            "| capacity | sent | busy | busy p50 | busy p99 | accepted and finished | other errors |",
            "|---:|---:|---:|---:|---:|---:|---|",
            f"| {self.capacity} | {self.sent} | {len(self.busy_s)} | {ms(self.busy_s, 50)} | {ms(self.busy_s, 99)} "
            f"| {len(self.finished_s)} | {self.other_errors or '-'} |"])


async def overload(endpoint: str, capacity: int, factor: int, text: str = TEXT) -> OverloadResult:
    result = OverloadResult(capacity, capacity * factor)
    # Timed from when each request is on the wire: one client sending the whole burst
    # takes tens of milliseconds itself, which is the client's time, not the daemon's.
    sent_at: dict[str, float] = {}

    def on_sent(request_id: str) -> None:
        sent_at[request_id] = time.perf_counter()

    async with AsyncClient(endpoint, timeout=300, on_sent=on_sent) as client:
        async def one(number: int) -> None:
            request_id = f"overload-{number}"
            try:
                await client.synthesize(text, "joe", request_id=request_id)
                result.finished_s.append(time.perf_counter() - sent_at[request_id])
            except VoxpipeError as exc:
                if exc.code == "busy":
                    result.busy_s.append(time.perf_counter() - sent_at[request_id])
                else:
                    result.other_errors[exc.code] = result.other_errors.get(exc.code, 0) + 1
        await asyncio.gather(*(one(n) for n in range(result.sent)))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capacity", type=int, default=32, help="limits.max_active_requests of the daemon")
    parser.add_argument("--factor", type=int, default=3, help="requests sent at once: capacity x factor")
    parser.add_argument("--engine", default="onnx", choices=["onnx", "torch", "tensorrt", "null"])
    parser.add_argument("--workers", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="voxpipe-overload-") as tmp:
        daemon = BenchDaemon(Path(tmp), DaemonSettings(engine=args.engine, workers=args.workers))
        with daemon.config_path.open("a") as config:
            config.write(f"[limits]\nmax_active_requests = {args.capacity}\n")
        print(f"starting a daemon holding {args.capacity} requests ...", file=sys.stderr)
        daemon.start()
        try:
            result = run_async(overload(daemon.endpoint, args.capacity, args.factor))
        finally:
            daemon.stop()
    print(result.table())
    lost = result.sent - len(result.busy_s) - len(result.finished_s) - sum(result.other_errors.values())
    print(f"\nbusy p99 {percentile(result.busy_s, 99) * 1000:.1f} ms (goal <= 50 ms); "
          f"accepted and finished {len(result.finished_s)}; unanswered {lost}")
    return 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
