"""`voxpipe status`: the daemon's processes, queues and voices, as a table or JSON."""
from __future__ import annotations

import argparse
import json
import sys

from ipc.client import Client
from ipc.errors import VoxpipeError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the daemon to be ready")


def run(args: argparse.Namespace) -> int:
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
             f"queued chunks {status.get('queues', {}).get('queued', 0)}", "",
             f"{'ROLE':<11}{'NAME':<10}{'PID':>8}  {'STATE':<9}{'DEVICE':<8}{'RESTARTS':>8}  DETAILS"]
    for proc in status.get("processes", []):
        stats = proc.get("stats", {})
        state = "ready" if proc.get("ready") else ("up" if proc.get("alive") else "down")
        details = ""
        if proc.get("role") == "worker":
            cache = stats.get("cache", {})
            details = (f"queue {stats.get('queue', 0)}  voices {','.join(stats.get('voices', [])) or '-'}  "
                       f"chunks {stats.get('chunks_done', 0)}  cache hits {cache.get('hits', 0)}/"
                       f"{cache.get('hits', 0) + cache.get('misses', 0)}")
        elif proc.get("role") == "frontend":
            details = f"active {stats.get('active', 0)}  accepted {stats.get('accepted', 0)}  completed {stats.get('completed', 0)}"
        lines.append(f"{proc.get('role', '?'):<11}{proc.get('name', '?'):<10}{proc.get('pid') or '-':>8}  "
                     f"{state:<9}{proc.get('device', '-') or '-':<8}{proc.get('restarts', 0):>8}  {details}")
    lines += ["", f"voices: {', '.join(status.get('voices', []))}"]
    for name, why in status.get("unavailable_voices", {}).items():
        lines.append(f"unavailable: {name}: {why}")
    return "\n".join(lines)
