"""`voxpipe cluster bench`: a fleet of daemons on a local Ray cluster (a head and more
nodes on this machine), a mixed load over many voices, one replica's daemon SIGKILLed
mid-load, and the checks that matter: every request answered with exactly the audio it
should have (compared sample for sample with a reference made afterwards), the fleet's
voice-cache hit rate routed by voice against random routing in the same run, and
throughput with 1..N replicas.

On a machine with few cores, throughput is measured with the null engine given a fixed
time per chunk that uses no core (VOXPIPE_NULL_EMULATED_GPU_MS: a GPU's time, emulated):
the fleet's own overhead then shows, not the host's lack of cores. `--engine onnx` runs
the real engine as it is.

    voxpipe cluster bench --replicas 3 --voices 30 --requests 600 --concurrency 24 \\
        --kill-replica-after 8 --json cluster.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.daemon.cluster.affinity import DEFAULT_AFFINITY_SLACK

TEXTS = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog. It was not amused.",
    "A fleet of daemons answers from one address, and each voice finds the replica that holds it.",
    "Numbers like 42 and 1999 are read out in full, and so are dates.",
    "Short one.",
    "When a replica dies in the middle of a sentence, another one carries on from the very next sample, "
    "so the listener hears nothing wrong.",
    "Streaming starts early. The first chunk is cut short on purpose, and the rest follows while it plays.",
    "Is this a question? Yes, it is; and this is the answer, with a clause or two.",
)
ZIPF_S = 1.1  # voice popularity: a few voices are asked for much more than the rest


class BenchError(Exception):
    """A bad option value."""


@dataclass
class Outcome:
    voice: str
    text: int
    status: int = 0
    audio: bytes = b""
    error: str = ""
    first_byte_s: float | None = None
    total_s: float = 0.0


@dataclass
class Pass:
    """One load against one deployment."""

    routing: str
    replicas: int
    outcomes: list[Outcome] = field(default_factory=list)
    kills: int = 0
    killed_at_s: float | None = None
    wall_s: float = 0.0
    fleet: dict[str, Any] = field(default_factory=dict)  # /fleet/stats over the load only


def voice_weights(count: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** ZIPF_S
    return weights / weights.sum()


def plan_load(voices: list[str], requests: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    weights = voice_weights(len(voices)).tolist()
    shuffled = voices[:]
    rng.shuffle(shuffled)  # popularity does not follow the names
    return [(rng.choices(shuffled, weights)[0], rng.randrange(len(TEXTS))) for _ in range(requests)]


def text_seed(voice: str, text: int) -> int:
    """A fixed seed per (voice, text): the reference made afterwards must match."""
    return (sum(map(ord, voice)) * 131 + text) % 1_000_003


# Piper's onnx graphs draw their noise inside the graph, ignoring the seed: two daemons
# make the same audio for a request only without that noise (the null and torch engines
# honour the seed). The onnx runs ask for noise-free synthesis so that a resumed request
# can be checked sample for sample.
EXACT_OPTIONS = {"onnx": {"noise_scale": "0", "noise_w": "0"}}
OPTIONS: dict[str, str] = {}


async def fetch(session: Any, url: str, voice: str, text: int, stream: bool = True) -> Outcome:
    params = {"text": TEXTS[text], "text_lang": "en", "ref_audio_path": voice, "media_type": "raw",
              "streaming_mode": "1" if stream else "0", "seed": str(text_seed(voice, text)), **OPTIONS}
    out = Outcome(voice, text)
    started = time.perf_counter()
    try:
        async with session.get(f"{url}/tts", params=params) as reply:
            out.status = reply.status
            parts = []
            async for data in reply.content.iter_any():
                if out.first_byte_s is None:
                    out.first_byte_s = time.perf_counter() - started
                parts.append(data)
            body = b"".join(parts)
            if reply.status == 200:
                out.audio = body
            else:
                out.error = body[:300].decode(errors="replace")
    except Exception as exc:  # noqa: BLE001 (a broken download is an outcome, counted as lost)
        out.error = f"{type(exc).__name__}: {exc}"
    out.total_s = time.perf_counter() - started
    return out


async def fleet_stats(session: Any, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/fleet/stats") as reply:
        body = await reply.json()
    return {**body["fleet"], "decisions": body.get("decisions") or {}}


REPLICA_FIELDS = ("requests", "busy_s", "loads", "hits", "lost")


def diff_stats(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: after[k] - before.get(k, 0) for k in ("attempts", "hits", "resumed", "failed")}
    out["hit_rate"] = out["hits"] / out["attempts"] if out["attempts"] else None
    # Per replica, over the load only: a replica that came up during it started from 0.
    per_replica = {}
    for name, counts in sorted(after.get("replica_counts", {}).items()):
        old = before.get("replica_counts", {}).get(name, {})
        per_replica[name] = {k: round(counts.get(k, 0) - old.get(k, 0), 3) for k in REPLICA_FIELDS}
    out["per_replica"] = {n: c for n, c in per_replica.items() if c["requests"] or c["loads"]}
    decisions_before = before.get("decisions", {})
    out["decisions"] = {k: v - decisions_before.get(k, 0) for k, v in after.get("decisions", {}).items()}
    return out


def kill_one_daemon(work_root: Path, rng: random.Random) -> int | None:
    from voxpipe.daemon.cluster.node_daemon import daemon_pids

    pids = daemon_pids(work_root)
    if not pids:
        return None
    pid = rng.choice(pids)
    os.kill(pid, signal.SIGKILL)  # the daemon's supervisor; its stages die with it
    return pid


async def run_load(url: str, load: list[tuple[str, int]], concurrency: int, work_root: Path,
                   kill_after_s: float | None, routing: str, replicas: int, warm_voices: list[str]) -> Pass:
    import aiohttp

    result = Pass(routing, replicas)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(voice: str, text: int) -> Outcome:
            async with gate:
                return await fetch(session, url, voice, text)

        # Warm-up (not counted): each voice once, as a fleet in its steady state would hold them.
        await asyncio.gather(*(one(v, 0) for v in warm_voices))
        before = await fleet_stats(session, url)
        started = time.perf_counter()

        async def killer() -> None:
            assert kill_after_s is not None
            await asyncio.sleep(kill_after_s)
            if kill_one_daemon(work_root, random.Random(7)) is not None:
                result.kills += 1
                result.killed_at_s = time.perf_counter() - started

        kill_task = asyncio.create_task(killer()) if kill_after_s is not None else None
        result.outcomes = await asyncio.gather(*(one(v, t) for v, t in load))
        result.wall_s = time.perf_counter() - started
        if kill_task is not None:
            kill_task.cancel()
        result.fleet = diff_stats(await fleet_stats(session, url), before)
    return result


async def references(url: str, keys: set[tuple[str, int]], concurrency: int) -> dict[tuple[str, int], bytes]:
    """The audio each (voice, text) should have: asked again, whole, with nothing killed."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(key: tuple[str, int]) -> tuple[tuple[str, int], Outcome]:
            async with gate:
                return key, await fetch(session, url, key[0], key[1], stream=False)

        got = await asyncio.gather(*(one(k) for k in sorted(keys)))
    missing = [k for k, o in got if o.status != 200]
    if missing:
        raise BenchError(f"{len(missing)} reference requests failed, e.g. {missing[0]}")
    return {k: o.audio for k, o in got}


def check(result: Pass, refs: dict[tuple[str, int], bytes]) -> dict[str, Any]:
    answered = lost = mismatched = repeated = missing = 0
    errors: dict[str, int] = {}
    for out in result.outcomes:
        ref = refs[(out.voice, out.text)]
        if out.status != 200:
            lost += 1
            errors[out.error[:80]] = errors.get(out.error[:80], 0) + 1
            continue
        got_n, ref_n = len(out.audio) // 2, len(ref) // 2
        repeated += max(0, got_n - ref_n)
        missing += max(0, ref_n - got_n)
        if out.audio == ref:
            answered += 1
        else:
            mismatched += 1
            lost += got_n < ref_n
    latencies = sorted(o.total_s for o in result.outcomes if o.status == 200)
    first = sorted(o.first_byte_s for o in result.outcomes if o.status == 200 and o.first_byte_s is not None)
    audio_s = sum(len(o.audio) // 2 for o in result.outcomes if o.status == 200) / 16000.0
    return {"routing": result.routing, "replicas": result.replicas, "requests": len(result.outcomes),
            "answered_audio": answered, "lost": lost, "repeated_samples": repeated, "missing_samples": missing,
            "mismatched_requests": mismatched, "kills": result.kills, "killed_at_s": result.killed_at_s,
            "resumed": result.fleet.get("resumed", 0), "fleet_cache_hit_rate": result.fleet.get("hit_rate"),
            "per_replica": result.fleet.get("per_replica", {}), "routing_decisions": result.fleet.get("decisions", {}),
            "wall_s": round(result.wall_s, 2), "requests_per_s": round(len(result.outcomes) / result.wall_s, 2),
            "audio_s_per_s": round(audio_s / result.wall_s, 2),
            "p50_s": _pct(latencies, 50), "p95_s": _pct(latencies, 95), "first_byte_p50_s": _pct(first, 50),
            "errors": errors}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 3)


class Fleet:
    """A local Ray cluster with Serve, and (re)deployments of the voxpipe application."""

    def __init__(self, nodes: int, work: Path, daemon: dict[str, Any]) -> None:
        from voxpipe.daemon.cluster.local import LocalCluster, free_port

        self.cluster = LocalCluster(nodes=nodes)
        self.work = work
        self.daemon = daemon
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Fleet":
        from voxpipe.daemon.cluster.local import start_serve

        self.cluster.start()
        try:
            start_serve(self.port)
        except BaseException:
            self.cluster.stop()
            raise
        return self

    def deploy(self, replicas: int, routing: str, voices_per_replica: int, max_ongoing: int,
               affinity_slack: int = DEFAULT_AFFINITY_SLACK) -> None:
        from ray import serve
        from voxpipe.daemon.cluster.app import FleetArgs, build_from
        from voxpipe.daemon.cluster.local import run_app

        args = FleetArgs.parse({"daemon": self.daemon, "replicas": replicas, "routing": routing,
                                "voices_per_replica": voices_per_replica, "max_ongoing_requests": max_ongoing,
                                "affinity_slack": affinity_slack})
        if "voxpipe" in serve.status().applications:
            serve.delete("voxpipe")  # fresh replicas: no voice held from the run before
        run_app(build_from(args), "voxpipe", "/", self.port)

    def __exit__(self, *exc: Any) -> None:
        self.cluster.stop()


def write_outputs(summary: dict[str, Any], out_dir: Path, json_path: Path | None) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = render_table(summary)
    (out_dir / "cluster_bench.md").write_text(table + "\n", encoding="utf-8")
    text = json.dumps(summary, indent=2, default=str)
    (out_dir / "cluster_bench.json").write_text(text + "\n", encoding="utf-8")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n", encoding="utf-8")
    plot(summary, out_dir / "cluster_bench.png")
    return table


def render_table(s: dict[str, Any]) -> str:
    rows = ["| run | replicas | requests | answered | lost | repeated samples | kills | resumed | hit rate | req/s | p50 s | p95 s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in [s["voice_routing"], s.get("random_routing")] + list(s.get("throughput", {}).get("runs", [])):
        if not run:
            continue
        rate = run.get("fleet_cache_hit_rate")
        name = f"{run['routing']} routing" + (", kill" if run.get("kills") else "")
        rows.append(f"| {name} | {run['replicas']} | {run['requests']} | {run['answered_audio']} | {run['lost']} | "
                    f"{run['repeated_samples']} | {run['kills']} | {run['resumed']} | "
                    f"{'-' if rate is None else f'{rate:.1%}'} | {run['requests_per_s']} | {run['p50_s']} | {run['p95_s']} |")
    lines = ["\n".join(rows), ""]
    replica_rows = ["| run | replica | requests | loads | busy s |", "|---|---|---|---|---|"]
    for run in [s["voice_routing"], s.get("random_routing")]:
        for name, c in (run or {}).get("per_replica", {}).items():
            replica_rows.append(f"| {run['routing']} routing | {name} | {c['requests']} | {c['loads']} | {c['busy_s']:.1f} |")
    if len(replica_rows) > 2:
        lines += ["\n".join(replica_rows), ""]
    vr = s.get("voice_vs_random")
    if vr:
        lines.append(f"Voice vs random routing: requests/s {vr['requests_per_s']:.2f}x, p95 {vr['p95']}x")
    tp = s.get("throughput")
    if tp:
        lines.append("Throughput vs 1 replica: " + ", ".join(f"{n} replicas {r:.2f}x" for n, r in tp["speedup"].items()))
    lines.append("Goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in s["goals"].items()))
    lines.append(f"Command: {s['command']}")
    return "\n".join(lines)


def plot(s: dict[str, Any], path: Path) -> None:
    try:
        from voxpipe.bench.plots import plt
    except ImportError as exc:
        print(f"note: {exc}; no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = ["by voice", "random"]
    rates = [s["voice_routing"]["fleet_cache_hit_rate"] or 0, (s.get("random_routing") or {}).get("fleet_cache_hit_rate") or 0]
    axes[0].bar(names, [r * 100 for r in rates], color=["tab:green", "tab:gray"])
    axes[0].axhline(95, color="tab:red", linestyle="--", linewidth=1)
    axes[0].set_ylabel("fleet voice-cache hit rate (%)")
    axes[0].set_title(f"{s['voices']} voices, {s['replicas']} replicas, 1 kill")
    tp = s.get("throughput")
    if tp:
        ns = [r["replicas"] for r in tp["runs"]]
        axes[1].plot(ns, [r["requests_per_s"] for r in tp["runs"]], marker="o", label="measured")
        axes[1].plot(ns, [tp["runs"][0]["requests_per_s"] * n for n in ns], linestyle="--", label="linear")
        axes[1].set_xlabel("replicas")
        axes[1].set_ylabel("requests / s")
        axes[1].set_xticks(ns)
        axes[1].legend()
        axes[1].set_title(f"throughput ({s['engine']} engine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=3, help="replicas (and Ray nodes: one replica per node)")
    parser.add_argument("--voices", type=int, default=30)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--kill-replica-after", type=float, default=None, metavar="S",
                        help="SIGKILL one replica's daemon this many seconds into the load")
    parser.add_argument("--engine", choices=["null", "onnx"], default="null")
    parser.add_argument("--emulated-gpu-ms", type=float, default=100.0,
                        help="null engine: wall time per chunk, using no core (a GPU's time, emulated)")
    parser.add_argument("--voice-load-ms", type=float, default=2000.0,
                        help="null engine: wall time to load a voice its worker does not hold, using no core")
    parser.add_argument("--voices-per-replica", type=int, default=16, help="voices one replica holds (LRU)")
    parser.add_argument("--affinity-slack", type=int, default=DEFAULT_AFFINITY_SLACK,
                        help="requests in flight past the least-loaded replica before a voice's replica is passed over")
    parser.add_argument("--max-ongoing", type=int, default=16,
                        help="max ongoing requests per replica: past it, a busy voice spreads to another replica")
    parser.add_argument("--throughput-requests", type=int, default=150,
                        help="requests per point of the 1..N replica throughput runs (0: skip them)")
    parser.add_argument("--no-random", action="store_true", help="skip the random-routing comparison")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    parser.add_argument("--out", type=Path, default=Path("cluster-bench"), help="folder for the table, JSON and plot")


def null_engine_env(args: argparse.Namespace) -> dict[str, str]:
    """The null engine's emulation: GPU time per chunk, a voice load's time, and a voice's
    size such that a worker's voice cache (worker.voice_cache_mib, the default) holds
    --voices-per-replica voices and the one the daemon preloads: never fewer than the
    replica's own bookkeeping counts as held, so its hit rate does not flatter."""
    from voxpipe.config import WorkerConfig

    return {"VOXPIPE_NULL_EMULATED_GPU_MS": str(args.emulated_gpu_ms),
            "VOXPIPE_NULL_EMULATED_LOAD_MS": str(args.voice_load_ms),
            "VOXPIPE_NULL_EMULATED_VOICE_MIB": repr(WorkerConfig().voice_cache_mib / (args.voices_per_replica + 1))}


def validate(args: argparse.Namespace) -> None:
    for name in ("replicas", "voices", "requests", "concurrency", "voices_per_replica", "max_ongoing"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if args.kill_replica_after is not None and args.kill_replica_after < 0:
        raise BenchError("--kill-replica-after must be >= 0")
    if args.kill_replica_after is not None and args.replicas < 2:
        raise BenchError("--kill-replica-after needs at least 2 replicas (a request resumes on another)")
    if args.voice_load_ms < 0 or args.emulated_gpu_ms < 0:
        raise BenchError("--voice-load-ms and --emulated-gpu-ms must be >= 0")
    if args.affinity_slack < 0:
        raise BenchError("--affinity-slack must be >= 0")
    if args.throughput_requests < 0:
        raise BenchError("--throughput-requests must be >= 0")


def run(args: argparse.Namespace) -> int:
    try:
        validate(args)
    except BenchError as exc:
        print(f"voxpipe cluster bench: {exc}", file=sys.stderr)
        return 2
    from voxpipe.daemon.cluster.voices import write_fleet_voices

    command = "voxpipe cluster bench " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    OPTIONS.clear()
    OPTIONS.update(EXACT_OPTIONS.get(args.engine, {}))
    with tempfile.TemporaryDirectory(prefix="vp-cluster-bench-") as tmp:
        work = Path(tmp)
        voices = write_fleet_voices(work / "voices", args.voices)
        daemon = {"engine": args.engine, "workers": 1, "voices_dir": str(work / "voices"),
                  "work_root": str(work / "replicas")}
        if args.engine == "null":
            daemon["env"] = null_engine_env(args)
        load = plan_load(voices, args.requests, seed=1)
        with Fleet(args.replicas, work, daemon) as fleet:
            passes = []
            for routing in ("voice",) if args.no_random else ("voice", "random"):
                print(f"routing by {routing}: deploying {args.replicas} replicas ...", file=sys.stderr, flush=True)
                fleet.deploy(args.replicas, routing, args.voices_per_replica, args.max_ongoing, args.affinity_slack)
                passes.append(asyncio.run(run_load(fleet.url, load, args.concurrency, work / "replicas",
                                                   args.kill_replica_after, routing, args.replicas, voices)))
            print("references ...", file=sys.stderr, flush=True)
            refs = asyncio.run(references(fleet.url, {(v, t) for v, t in load}, args.concurrency))
            checked = [check(p, refs) for p in passes]
            runs = []
            if args.throughput_requests:
                tp_load = plan_load(voices, args.throughput_requests, seed=2)
                for n in range(1, args.replicas + 1):
                    print(f"throughput: {n} replica(s) ...", file=sys.stderr, flush=True)
                    fleet.deploy(n, "voice", args.voices_per_replica, args.max_ongoing, args.affinity_slack)
                    done = asyncio.run(run_load(fleet.url, tp_load, args.concurrency, work / "replicas", None,
                                                "voice", n, voices))
                    runs.append(check(done, {**refs, **asyncio.run(references(
                        fleet.url, {(v, t) for v, t in tp_load} - set(refs), args.concurrency))}))
    summary = summarize(args, checked, runs, command)
    print(write_outputs(summary, args.out, args.json))
    return 0 if all(summary["goals"].values()) else 1


def summarize(args: argparse.Namespace, checked: list[dict[str, Any]], runs: list[dict[str, Any]],
              command: str) -> dict[str, Any]:
    voice = checked[0]
    random_run = checked[1] if len(checked) > 1 else None
    summary: dict[str, Any] = {
        "requests": voice["requests"], "answered_audio": voice["answered_audio"], "lost": voice["lost"],
        "repeated_samples": voice["repeated_samples"], "kills": voice["kills"],
        "fleet_cache_hit_rate": voice["fleet_cache_hit_rate"],
        "random_routing_hit_rate": random_run["fleet_cache_hit_rate"] if random_run else None,
        "engine": args.engine, "emulated_gpu_ms_per_chunk": args.emulated_gpu_ms if args.engine == "null" else None,
        "voice_load_ms": args.voice_load_ms if args.engine == "null" else None, "affinity_slack": args.affinity_slack,
        "replicas": args.replicas, "voices": args.voices, "concurrency": args.concurrency,
        "voices_per_replica": args.voices_per_replica, "voice_routing": voice, "random_routing": random_run,
        "command": command, "host_cpus": os.cpu_count(),
    }
    goals = {"0 lost": voice["lost"] == 0, "0 repeated samples": voice["repeated_samples"] == 0
             and voice["mismatched_requests"] == 0}
    if args.kill_replica_after is not None:
        goals["a kill happened"] = voice["kills"] >= 1
    if voice["fleet_cache_hit_rate"] is not None:
        goals["hit rate >= 95%"] = voice["fleet_cache_hit_rate"] >= 0.95
    if random_run is not None:
        summary["voice_vs_random"] = {
            "requests_per_s": round(voice["requests_per_s"] / random_run["requests_per_s"], 2),
            "p95": round(voice["p95_s"] / random_run["p95_s"], 2) if voice["p95_s"] and random_run["p95_s"] else None}
        goals["voice req/s >= random"] = voice["requests_per_s"] >= random_run["requests_per_s"]
        goals["voice p95 <= random"] = (voice["p95_s"] is not None and random_run["p95_s"] is not None
                                        and voice["p95_s"] <= random_run["p95_s"])
    if runs:
        base = runs[0]["requests_per_s"]
        speedup = {str(r["replicas"]): round(r["requests_per_s"] / base, 2) for r in runs}
        summary["throughput"] = {"runs": runs, "speedup": speedup}
        if args.engine == "null" and len(runs) == 3:
            goals["3 replicas >= 2.7x"] = speedup["3"] >= 2.7
    summary["goals"] = goals
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe cluster bench", description=__doc__.split("\n\n")[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
