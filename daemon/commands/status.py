"""`voxpipe status`: the daemon's processes, queues and voices, as a table or JSON."""
from __future__ import annotations

import argparse
import json
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the daemon to be ready")


def run(args: argparse.Namespace) -> int:
    from voxpipe.ipc.client import Client  # here, not at the top: `--help` answers at once
    from voxpipe.ipc.errors import VoxpipeError

    try:
        with Client(args.endpoint, connect_timeout=max(2.0, args.wait)) as client:
            status = client.wait_ready(args.wait) if args.wait else client.status()
    except VoxpipeError as exc:
        print(f"voxpipe status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render(status))
    return 0 if status.get("ready") else 3


def render(status: dict) -> str:
    lines = [f"voxpipe {status.get('version', '?')}  run {status.get('run_id', '?')}  "
             f"{'ready' if status.get('ready') else 'NOT READY'}{'  draining' if status.get('draining') else ''}",
             f"endpoint {status.get('endpoint', '?')}  active requests {status.get('active_requests', 0)}  "
             f"queued chunks {status.get('queues', {}).get('queued', 0)}"
             + (f"  metrics {status['metrics']}" if status.get("metrics") else ""),
             _last_minute_line(status.get("last_minute") or {}, status.get("voice_cache") or {}), "",
             f"{'ROLE':<11}{'NAME':<10}{'PID':>8}  {'STATE':<9}{'DEVICE':<8}{'RESTARTS':>8}{'RSS':>10}  DETAILS"]
    for proc in status.get("processes", []):
        stats = proc.get("stats", {})
        state = "ready" if proc.get("ready") else ("up" if proc.get("alive") else "down")
        details = ""
        if proc.get("role") == "worker":
            cache = stats.get("cache", {})
            details = (f"queue {stats.get('queue', 0)}  voices {','.join(stats.get('voices', [])) or '-'}  "
                       f"chunks {stats.get('chunks_done', 0)}  cache hits {cache.get('hits', 0)}/"
                       f"{cache.get('hits', 0) + cache.get('misses', 0)}")
            conditioning = stats.get("conditioning") or {}
            if conditioning.get("hits") or conditioning.get("misses"):
                details += (f"  reference clips {conditioning.get('hits', 0)}/"
                            f"{conditioning.get('hits', 0) + conditioning.get('misses', 0)} cached "
                            f"({_mib(conditioning.get('bytes'))})")
        elif proc.get("role") == "frontend":
            details = f"active {stats.get('active', 0)}  accepted {stats.get('accepted', 0)}  completed {stats.get('completed', 0)}"
        elif proc.get("role") == "merger":
            details = f"requests {stats.get('requests', 0)}"
        lines.append(f"{proc.get('role', '?'):<11}{proc.get('name', '?'):<10}{proc.get('pid') or '-':>8}  "
                     f"{state:<9}{proc.get('device', '-') or '-':<8}{proc.get('restarts', 0):>8}"
                     f"{_mib(proc.get('rss')):>10}  {details}")
        for voice, chosen in (stats.get("voice_details") or {}).items():
            if chosen.get("precision"):
                lines.append(f"{'':<21}voice {voice}: {chosen['precision']}")
    lines += ["", *_device_lines(status.get("devices") or [])]
    if status.get("worker_allocator"):
        lines.append(f"workers' allocator: {status['worker_allocator']}")
    lines += [f"voices: {', '.join(status.get('voices', []))}"]
    for name, why in status.get("unavailable_voices", {}).items():
        lines.append(f"unavailable: {name}: {why}")
    return "\n".join(lines)


def _mib(nbytes: object) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if isinstance(nbytes, (int, float)) else "-"


def _seconds(value: object) -> str:
    return f"{value:.3f} s" if isinstance(value, (int, float)) else "-"


def _last_minute_line(recent: dict, cache: dict) -> str:
    rate = cache.get("hit_rate")
    return (f"last {recent.get('window_s', 0):.0f} s: {recent.get('completed', 0)} completed, "
            f"{recent.get('failed', 0)} failed, {recent.get('requests_per_s', 0.0):.2f} req/s, "
            f"{recent.get('audio_s_per_s', 0.0):.2f} audio s/s, avg latency {_seconds(recent.get('avg_latency_s'))}, "
            f"avg first audio {_seconds(recent.get('avg_first_audio_s'))}  |  voice cache hit rate "
            f"{'-' if rate is None else f'{rate:.1%}'} ({cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)")


def _device_lines(devices: list) -> list[str]:
    lines = []
    for dev in devices:
        if dev.get("kind") == "gpu":
            util = dev.get("utilization")
            lines.append(f"device gpu{dev.get('index')}: {dev.get('name')}  utilisation "
                         f"{'-' if util is None else f'{util:.0%}'}  memory {_mib(dev.get('memory_used'))} / "
                         f"{_mib(dev.get('memory_total'))}" + (f"  error: {dev['error']}" if dev.get("error") else ""))
        else:
            load = dev.get("load_1m")
            lines.append(f"device cpu: {dev.get('cores', '?')} cores  load "
                         f"{'-' if load is None else f'{load:.2f}'}")
    return lines
