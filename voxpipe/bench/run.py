"""`voxpipe bench`: start the daemon, measure it and piper's PiperVoice interleaved in one
run, and write ratios, a Markdown table and plots.

Phases: latency (one request at a time, every text class and the long form, the two
systems alternating), throughput (a mixed load under 1, 4 and 16 clients; piper in
each configuration that could be its best), then transport micro-benchmarks on a
null-engine daemon. Daemon CPU outside the engine is measured over the throughput runs.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from voxpipe.bench import ipc_micro, report, voxpipe_side
from voxpipe.bench.baseline import BaselineError, PiperBaseline
from voxpipe.bench.daemon import (BenchDaemon, CpuWindow, DaemonError, DaemonSettings, ForeignLoad, idle_rate,
                                  wait_quiet,
                                  snapshot, window)
from voxpipe.bench.results import PIPER, BenchResults, Micro, Overhead, Sample, ThroughputRun
from voxpipe.bench.texts import (DEFAULT_TEXTS_DIR, SCALES, BenchText, TextsError, load_classes, load_longform,
                                 mixed_load, per_class, scaled_class)
from voxpipe.daemon.commands.progress import Progress
from voxpipe.ipc.errors import VoxpipeError


class BenchError(Exception):
    """A bad option value."""


WARMUP_TEXTS = ("Warm up.", "The quick brown fox jumps over the lazy dog today.")


# `voxpipe bench NAME`: the other benchmarks, each a module of this package with
# add_arguments(parser) and run(args) (and `python -m voxpipe.bench.MODULE` runs it too).
SUBCOMMANDS = {
    "gsv": ("voxpipe.bench.gsv_serve", "GPT-SoVITS serving: the reference package, voxpipe one at a time and "
                                       "voxpipe batched"),
    "soak": ("voxpipe.bench.soak", "a mixed load with worker and merger kills against a running daemon: "
                                   "nothing lost, no seams, memory back where it started"),
    "overload": ("voxpipe.bench.overload", "a daemon of its own sent a multiple of what it holds: how fast "
                                           "`busy` answers come, and do the accepted requests finish"),
    "stop": ("voxpipe.bench.stop", "daemons of its own stopped under load (restart budget spent, SIGKILL of "
                                   "the whole daemon): seconds until each client is told"),
    "firstbyte": ("voxpipe.bench.firstbyte", "time to first audio over HTTP against the ZeroMQ client, "
                                             "against a daemon serving both"),
}


def subcommand(name: str):
    """The module behind `voxpipe bench NAME`."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    # Sub-benchmarks; without one, the daemon against piper.
    sub = parser.add_subparsers(dest="bench_command", required=False, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        subcommand(name).add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    parser.add_argument("--quick", action="store_true",
                        help="one text per class, the long form's first paragraph, a lighter mixed load and "
                             "fewer piper configurations (under 2 minutes on 2 cores)")
    parser.add_argument("--texts-dir", type=Path, default=DEFAULT_TEXTS_DIR,
                        help="folder with texts_en.tsv and longform_en.txt (default: the ones installed with "
                             "voxpipe, in voxpipe/bench/data/)")
    parser.add_argument("--out", type=Path, help="results folder (default: results/bench-<timestamp>/)")
    parser.add_argument("--reps", type=int, help="rounds over the class texts (default 3; quick 1)")
    parser.add_argument("--longform-reps", type=int, help="long-form requests per system (default 2; quick 1)")
    parser.add_argument("--per-class", type=int, help="texts of each class to use (default all; quick 1)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels for throughput (default 1,4,16)")
    parser.add_argument("--mix-rounds", type=int,
                        help="rounds over the mixed load per throughput run, order flipped each round "
                             "(default 2; quick 1)")
    parser.add_argument("--workers", type=int, help="daemon workers (default: cores / threads)")
    parser.add_argument("--threads", type=int, default=1, help="engine threads per worker (default 1)")
    parser.add_argument("--engine", default="onnx", choices=["onnx", "torch", "tensorrt", "null"],
                        help="the daemon's engine (null: the pipeline alone, silence, no model)")
    parser.add_argument("--max-voices", type=int, default=16,
                        help="largest pool of piper voices tried for throughput (default 16; quick 2)")
    parser.add_argument("--micro-n", type=int, help="round trips per micro-benchmark (default 1000; quick 200)")
    parser.add_argument("--no-baseline", action="store_true", help="measure voxpipe only")
    parser.add_argument("--no-micro", action="store_true", help="skip the IPC micro-benchmarks")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")


class Phases:
    """One line per phase on stderr, with the time since the run began."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.reps = args.reps or (1 if quick else 3)
    args.longform_reps = args.longform_reps or (1 if quick else 2)
    args.per_class = args.per_class or (1 if quick else None)
    args.mix_rounds = args.mix_rounds or (1 if quick else 2)
    args.micro_n = args.micro_n or (200 if quick else 1000)
    if quick:
        args.max_voices = min(args.max_voices, 2)
    args.workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
    try:
        args.levels = sorted({int(c) for c in str(args.clients).split(",") if c.strip()})
    except ValueError:
        args.levels = []
    if not args.levels or min(args.levels) < 1:
        raise BenchError(f"--clients {args.clients!r}: expected positive integers, e.g. 1,4,16")


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this run: every option that differs from its default."""
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    defaults = vars(parser.parse_args([]))
    parts = ["voxpipe", "bench"]
    for action in parser._actions:
        if action.dest in defaults and getattr(args, action.dest, None) != defaults[action.dest]:
            value = getattr(args, action.dest)
            parts += [action.option_strings[-1]] if value is True else [action.option_strings[-1], str(value)]
    return shlex.join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("voxpipe", "piper-tts", "onnxruntime", "pyzmq", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# A pause after each request of the latency phase, so the next one, whichever system
# sends it, starts on a quiet machine: onnxruntime's pool threads in piper's session spin
# for some milliseconds after a run (its default), and the daemon's processes finish
# their bookkeeping after an answer; either would otherwise slow the other side's start.
SETTLE_S = 0.15


def _latency_phase(args: argparse.Namespace, daemon: BenchDaemon, baseline: PiperBaseline | None, texts: list[BenchText],
                   longform: BenchText, say: Phases) -> list[Sample]:
    """Every text, one request at a time, the two systems alternating which goes first."""
    jobs = [t for _ in range(args.reps) for t in texts] + [longform] * args.longform_reps
    say(f"latency: {len(jobs)} texts per system ({args.reps} rounds over {len(texts)} class texts, "
        f"{args.longform_reps}× the long form of {longform.chars} characters)")
    samples: list[Sample] = []
    voice = baseline.voice(args.workers * args.threads) if baseline else None
    progress = Progress(len(jobs), "latency")
    with daemon.client() as client:
        for index, text in enumerate(jobs):
            order = ("voxpipe", "piper") if index % 2 == 0 else ("piper", "voxpipe")
            for system in order:
                if system == "voxpipe":
                    samples.append(voxpipe_side.measure(client, text))
                elif voice is not None:
                    samples.append(baseline.measure(voice, text))
                time.sleep(SETTLE_S)
            progress.update(index + 1, f"{text.cls}")
    progress.close()
    # First audio of the long form repeated: the plan is made as the text is read, so it
    # should not grow with the text (voxpipe only: piper's side would take an hour).
    with daemon.client() as client:
        for times in SCALES:
            scaled = BenchText(scaled_class(times), "\n\n".join([longform.text] * times))
            say(f"first audio of the long form ×{times} ({scaled.chars} characters)")
            for _ in range(args.longform_reps):
                wait_quiet(daemon)  # what the last cancelled request left running has finished
                samples.append(voxpipe_side.measure_first_audio(client, scaled))
    return samples


def _baseline_configs(clients: int, total_threads: int, max_voices: int, quick: bool) -> list[tuple[int, int, str]]:
    """(voices, threads per voice, label) piper could do best with at this concurrency:
    one voice with every thread, or a pool of one-thread voices (as many as cores, or
    one per client). Quick runs try the sequential one with one client only."""
    configs = [] if quick and clients > 1 else [(1, total_threads, f"sequential, 1 voice × {total_threads} threads")]
    for voices in sorted({min(total_threads, clients), min(clients, max_voices)}):
        if (voices, 1) != (1, total_threads) or not configs:
            configs.append((voices, 1, f"pool of {voices} voice{'s' if voices > 1 else ''} × 1 thread"))
    return configs


def _throughput_phase(args: argparse.Namespace, daemon: BenchDaemon, baseline: PiperBaseline | None,
                      loads: list[list[BenchText]], say: Phases) -> tuple[list[ThroughputRun], CpuWindow | None]:
    """Each concurrency level: voxpipe and every piper configuration, over the same mixed
    load in rounds; the order flips every round so that a change in the machine's other
    load falls on both systems alike."""
    runs: list[ThroughputRun] = []
    cpu = CpuWindow()
    cpu_known = True
    vox_config = f"daemon, {args.workers} workers × {args.threads} thread{'s' if args.threads > 1 else ''}"
    requests = sum(len(load) for load in loads)
    for level, clients in enumerate(args.levels):
        configs = _baseline_configs(clients, args.workers * args.threads, args.max_voices, args.quick) if baseline else []
        say(f"throughput: {clients} client{'s' if clients > 1 else ''}, {requests} requests in {len(loads)} "
            f"round{'s' if len(loads) > 1 else ''}; voxpipe and {len(configs)} piper configuration"
            f"{'s' if len(configs) != 1 else ''}")
        merged: dict[str, ThroughputRun] = {}
        steps: list[tuple[str, Any]] = [("voxpipe", None)] + [("piper", c) for c in configs]
        for turn, load in enumerate(loads):
            for system, config in (steps if (level + turn) % 2 == 0 else steps[::-1]):
                if system == "voxpipe":
                    foreign = ForeignLoad(daemon)
                    before = snapshot(daemon)  # waits for figures that count every earlier chunk
                    run = voxpipe_side.throughput(daemon.endpoint, load, clients, vox_config)
                    run.foreign_cores = foreign.cores()
                    measured = window(before, snapshot(daemon))
                    if measured is None:
                        cpu_known = False
                        say("note: no CPU figures for this run (a stage was replaced, or a worker "
                            "reported no engine time); the overhead is left out")
                    else:
                        cpu.add(measured)
                        run.cpu_s, run.engine_cpu_s = measured.total_s, measured.engine_s
                else:
                    voices, threads, label = config
                    assert baseline is not None
                    foreign = ForeignLoad(daemon)
                    run = baseline.throughput(load, clients, voices, threads, label)
                    run.foreign_cores = foreign.cores()
                if run.config in merged:
                    merged[run.config].add(run)
                else:
                    merged[run.config] = run
                say(f"  {system:8} {run.config}: {run.requests_per_s:.2f} req/s, {run.audio_per_s:.2f} audio s/s "
                    f"({run.outside_engine * 100:.1f}% of CPU outside the engine; other processes: "
                    f"{run.foreign_cores:.1f} cores)")
        runs.extend(merged.values())
    return runs, (cpu if cpu_known and cpu.total_s > 0 else None)


def _micro_phase(args: argparse.Namespace, null: BenchDaemon | None, workdir: Path, say: Phases) -> Micro:
    """Transport micro-benchmarks on `null` (a null-engine daemon), or on one started here."""
    micro = Micro()
    own = None
    if null is None:
        say("micro: starting a null-engine daemon")
        own = null = BenchDaemon(workdir / "null", DaemonSettings("null", args.workers, args.threads)).start()
    try:
        say(f"micro: {args.micro_n} tiny requests and pings through the null-engine daemon")
        micro.null_roundtrip_s, micro.null_daemon_s, micro.null_cpu_per_request = \
            ipc_micro.null_roundtrip(null, args.micro_n)
        micro.ping_s = ipc_micro.ping(null, args.micro_n)
    finally:
        if own is not None:
            own.stop()
    n = max(20, args.micro_n // 5)
    say(f"micro: 10 s of audio between two processes, {n}× via shared memory and {n}× via ZeroMQ frames")
    micro.shm_s, micro.zmq_s, micro.audio_bytes = ipc_micro.shm_vs_zmq(n)
    return micro


def bench(args: argparse.Namespace) -> tuple[BenchResults, Path]:
    command = _command(args)  # before the defaults fill in
    _defaults(args)
    say = Phases()
    classes = per_class(load_classes(args.texts_dir), args.per_class)
    longform = load_longform(args.texts_dir, paragraphs=1 if args.quick else None)
    # Quick runs leave the longest class out of the mixed load: it alone would double the time.
    longest = max(classes, key=lambda t: t.chars).cls
    mix = [t for t in classes if not (args.quick and t.cls == longest)] or classes
    loads = [mixed_load(mix, 1, seed=turn) for turn in range(args.mix_rounds)]
    started = datetime.now()
    out_dir = args.out or Path("results") / f"bench-{started:%Y%m%d-%H%M%S}"
    versions = _versions()
    total_threads = args.workers * args.threads
    results = BenchResults(setup={
        "started": f"{started:%Y-%m-%d %H:%M}", "cpus": os.cpu_count(), "cpu_model": _cpu_model(),
        "voxpipe": f"daemon with {args.workers} workers × {args.threads} engine thread(s), engine {args.engine}, "
                   f"voice joe, default config; client: ipc/client.py (streaming)",
        "baseline": ("none" if args.no_baseline else
                     f"piper-tts {versions.get('piper-tts', '?')} PiperVoice in this process, voice joe, onnxruntime "
                     f"{versions.get('onnxruntime', '?')} with {total_threads} intra-op threads in all"),
        "command": command, "quick": args.quick, "versions": versions,
        "texts": {"classes": len(classes), "longform_chars": longform.chars,
                  "mixed_load": sum(len(load) for load in loads)}})
    baseline: PiperBaseline | None = None
    with tempfile.TemporaryDirectory(prefix="voxpipe-bench-") as tmp:
        workdir = Path(tmp)
        say(f"starting the daemon: {args.workers} workers × {args.threads} thread(s), engine {args.engine}")
        daemon = BenchDaemon(workdir / "daemon", DaemonSettings(args.engine, args.workers, args.threads)).start()
        try:
            if not args.no_baseline:
                say(f"loading the baseline: PiperVoice with {total_threads} onnxruntime threads")
                baseline = PiperBaseline()
                baseline.voice(total_threads)
            with daemon.client() as client:
                for text in WARMUP_TEXTS:
                    client.synthesize(text)
            foreign = ForeignLoad(daemon)
            results.samples = _latency_phase(args, daemon, baseline, classes, longform, say)
            results.setup["latency_foreign_cores"] = foreign.cores()
            idle_s = 3.0 if args.quick else 10.0  # /proc counts CPU in 10 ms ticks: long enough to resolve
            # The latency phase ends on cancelled long forms: let their tail finish first,
            # or it counts as idle CPU (a worker showed 52-67 ms per s, the daemon 77).
            # Over 1 s probes: /proc counts CPU in 10 ms ticks, and the idle daemon itself
            # takes 10-20 ms per s.
            if not wait_quiet(daemon, probe_s=1.0, max_cores=0.04):
                say("the daemon did not go quiet within 30 s; its idle CPU is measured anyway")
            say(f"measuring the idle daemon's CPU for {idle_s:.0f} s")
            idle = idle_rate(daemon, idle_s)
            runs, cpu = _throughput_phase(args, daemon, baseline, loads, say)
            results.throughput = runs
            if cpu is not None:
                piper = [r for r in runs if r.system == PIPER]
                vox = [r for r in runs if r.system != PIPER]
                results.overhead = Overhead(cpu.total_s, cpu.engine_s, dict(cpu.by_role or {}),
                                            sum(r.cpu_s for r in piper) if piper else math.nan,
                                            sum(r.engine_cpu_s for r in piper) if piper else math.nan,
                                            sum(r.wall_s for r in vox), sum(r.requests for r in vox), idle)
            if not args.no_micro and args.engine == "null":
                results.micro = _micro_phase(args, daemon, workdir, say)
        finally:
            daemon.stop()
        if not args.no_micro and args.engine != "null":
            results.micro = _micro_phase(args, None, workdir, say)  # on a machine without the main daemon
    return results, out_dir


def run(args: argparse.Namespace) -> int:
    if getattr(args, "bench_command", None):
        return int(subcommand(args.bench_command).run(args))
    plots = not args.no_plots
    if plots:
        try:
            import voxpipe.bench.plots  # noqa: F401
        except ImportError as exc:
            print(f"voxpipe bench: {exc}; this run writes no plots (--no-plots says so without this note)",
                  file=sys.stderr)
            plots = False
    try:
        results, out_dir = bench(args)
    except (TextsError, DaemonError, VoxpipeError, BaselineError, BenchError) as exc:
        print(f"voxpipe bench: {exc}", file=sys.stderr)
        return 1
    written = report.write(results, out_dir, with_plots=plots)
    print("\n".join(report.ratio_lines(results)))
    print()
    print(report.markdown(results, plots=False))
    print(f"results: {out_dir}/ ({', '.join(p.name for p in written)})")
    return 0
