"""Turns a run's results into ratios, a Markdown report and PNG plots."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from voxpipe.bench.results import PIPER, PLOTS, VOXPIPE, BenchResults, Sample, throughput_levels
from voxpipe.bench.stats import Summary, pearson, ratio
from voxpipe.bench.texts import LONGFORM, SCALES, is_scaled, scaled_class

FLAT_CORRELATION = 0.3  # |r| at most this counts as "flat in text length"


@dataclass(frozen=True)
class ClassFigures:
    cls: str
    chars: float  # mean text length
    latency: dict[str, Summary]  # by system
    first_audio: dict[str, Summary]
    rtf: dict[str, Summary]


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def classes(samples: list[Sample]) -> list[str]:
    seen: dict[str, None] = {}
    for s in samples:
        seen.setdefault(s.cls, None)
    return list(seen)


def class_figures(samples: list[Sample]) -> list[ClassFigures]:
    out = []
    for cls in classes(samples):
        mine = [s for s in samples if s.cls == cls]
        by = {system: [s for s in mine if s.system == system] for system in (VOXPIPE, PIPER)}
        by = {k: v for k, v in by.items() if v}
        out.append(ClassFigures(cls, sum(s.chars for s in mine) / len(mine),
                                {k: Summary.of([s.latency_s for s in v]) for k, v in by.items()},
                                {k: Summary.of([s.first_audio_s for s in v]) for k, v in by.items()},
                                {k: Summary.of([s.rtf for s in v]) for k, v in by.items()}))
    return out


def correlations(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """r of latency and of first audio with text length, per system."""
    out = {}
    for system in (VOXPIPE, PIPER):
        # The long form repeated has its own goal (its few huge texts would outweigh the rest here).
        mine = [s for s in samples if s.system == system and not is_scaled(s.cls)]
        if mine:
            chars = [float(s.chars) for s in mine]
            out[system] = {"latency": pearson(chars, [s.latency_s for s in mine]),
                           "first_audio": pearson(chars, [s.first_audio_s for s in mine])}
    return out


def goals(results: BenchResults) -> list[Goal]:
    figures = {f.cls: f for f in class_figures(results.samples)}
    out = []
    long = figures.get(LONGFORM)
    both = long is not None and VOXPIPE in long.latency and PIPER in long.latency
    r = ratio(long.first_audio[VOXPIPE].p50, long.first_audio[PIPER].p50) if both else math.nan
    out.append(Goal("long form: time to first audio", "≤ 0.3× piper", _x(r), _le(r, 0.3)))
    r = ratio(long.latency[VOXPIPE].p50, long.latency[PIPER].p50) if both else math.nan
    out.append(Goal("long form: total time", "≤ 1.0× piper", _x(r), _le(r, 1.0)))
    level16 = [lvl for lvl in throughput_levels(results.throughput) if lvl[0] == 16]
    r = math.nan
    if level16 and level16[0][1] and level16[0][2]:
        r = ratio(level16[0][1].requests_per_s, level16[0][2].requests_per_s)
    measured = _x(r)
    if level16 and level16[0][1] and level16[0][2]:
        measured += f" (per CPU second: {_x(ratio(level16[0][1].audio_per_cpu_s, level16[0][2].audio_per_cpu_s))})"
    out.append(Goal("throughput, 16 clients", "≥ 1.1× piper's best", measured, None if math.isnan(r) else r >= 1.1))
    p50 = Summary.of(results.micro.null_roundtrip_s).p50 if results.micro and results.micro.null_roundtrip_s else math.nan
    out.append(Goal("null-engine round trip p50", "≤ 1 ms", _ms(p50), _le(p50, 0.001)))
    share = results.overhead.share if results.overhead else math.nan
    out.append(Goal("daemon CPU outside the engine", "≤ 5%", _pct(share), _le(share, 0.05)))
    scaled = figures.get(scaled_class(max(SCALES)))
    base = figures.get(scaled_class(min(SCALES))) if min(SCALES) == 1 else long  # the same measurement at x1
    r = math.nan
    if base is not None and scaled is not None and VOXPIPE in base.first_audio and VOXPIPE in scaled.first_audio:
        r = ratio(scaled.first_audio[VOXPIPE].p50, base.first_audio[VOXPIPE].p50)
    out.append(Goal(f"long form ×{max(SCALES)}: first audio", "≤ 1.1× the long form's", _x(r), _le(r, 1.1)))
    rho = correlations(results.samples).get(VOXPIPE, {}).get("first_audio", math.nan)
    out.append(Goal("first audio vs text length", f"|r| ≤ {FLAT_CORRELATION}", _r(rho),
                    None if math.isnan(rho) else abs(rho) <= FLAT_CORRELATION))
    return out


def _le(value: float, bound: float) -> bool | None:
    return None if math.isnan(value) else value <= bound


def _x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def _pct(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{share * 100:.1f}%"


def _r(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def _s(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _met(goal: Goal) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[goal.met]


def ratio_lines(results: BenchResults) -> list[str]:
    """The headline ratios, voxpipe / piper, one line each (for the terminal)."""
    lines = []
    for f in class_figures(results.samples):
        if VOXPIPE in f.latency and PIPER in f.latency:
            lines.append(f"{f.cls:>9}: latency p50 {_x(ratio(f.latency[VOXPIPE].p50, f.latency[PIPER].p50))}"
                         f"  first audio p50 {_x(ratio(f.first_audio[VOXPIPE].p50, f.first_audio[PIPER].p50))}"
                         f"  RTF p50 {_x(ratio(f.rtf[VOXPIPE].p50, f.rtf[PIPER].p50))}")
    for clients, vox, best in throughput_levels(results.throughput):
        if vox and best:
            lines.append(f"{clients:>3} clients: throughput {_x(ratio(vox.requests_per_s, best.requests_per_s))} "
                         f"piper's best ({best.config}); per CPU second "
                         f"{_x(ratio(vox.audio_per_cpu_s, best.audio_per_cpu_s))}")
    for g in goals(results):
        lines.append(f"goal {g.name} {g.target}: {g.measured} — {_met(g).strip('*')}")
    return lines


def markdown(results: BenchResults, plots: bool = True) -> str:
    sections = [_header(results), _goals_section(results), _latency_section(results),
                _correlation_section(results), _throughput_section(results), _overhead_section(results),
                _micro_section(results)]
    if plots:
        sections.append(["### Plots", ""] + [f"![{name[:-4]}]({name})" for name in PLOTS])
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _header(results: BenchResults) -> list[str]:
    setup = results.setup
    out = [f"## voxpipe vs piper — {setup.get('started', '')}", "",
           f"- machine: {setup.get('cpus')} CPU cores, {setup.get('cpu_model', '')}",
           f"- voxpipe: {setup.get('voxpipe')}", f"- baseline: {setup.get('baseline')}",
           f"- command: `{setup.get('command')}`"]
    if "latency_foreign_cores" in setup:
        out.append(f"- the machine is shared: other processes kept {_f(setup['latency_foreign_cores'], 1)} of its "
                   f"cores busy on average during the latency runs (per throughput run: see below)")
    return out


def _goals_section(results: BenchResults) -> list[str]:
    return (["### Goals", "", "| goal | target | measured | met |", "|---|---|---|---|"]
            + [f"| {g.name} | {g.target} | {g.measured} | {_met(g)} |" for g in goals(results)])


def _latency_section(results: BenchResults) -> list[str]:
    out = ["### Latency, first audio and real-time factor by text class", "",
           "Per request, one at a time; ratio = voxpipe / piper (below 1: voxpipe is faster).", "",
           "| class | chars | system | n | latency p50 | latency p95 | first audio p50 | first audio p95 | RTF p50 |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    v, p = VOXPIPE, PIPER
    for f in class_figures(results.samples):
        for system in (v, p):
            if system in f.latency:
                lat, first, rtf = f.latency[system], f.first_audio[system], f.rtf[system]
                out.append(f"| {f.cls} | {f.chars:.0f} | {system} | {lat.n} | {_s(lat.p50)} | {_s(lat.p95)} | "
                           f"{_s(first.p50)} | {_s(first.p95)} | {_f(rtf.p50, 3)} |")
        if v in f.latency and p in f.latency:
            out.append(f"| {f.cls} | | **ratio** | | **{_x(ratio(f.latency[v].p50, f.latency[p].p50))}** | "
                       f"{_x(ratio(f.latency[v].p95, f.latency[p].p95))} | "
                       f"**{_x(ratio(f.first_audio[v].p50, f.first_audio[p].p50))}** | "
                       f"{_x(ratio(f.first_audio[v].p95, f.first_audio[p].p95))} | "
                       f"{_x(ratio(f.rtf[v].p50, f.rtf[p].p50))} |")
    return out if results.samples else []


def _correlation_section(results: BenchResults) -> list[str]:
    corr = correlations(results.samples)
    if not corr:
        return []
    return (["### Correlation with text length (Pearson r over every request above)", "",
             "| system | latency | first audio |", "|---|---:|---:|"]
            + [f"| {system} | {_r(c['latency'])} | {_r(c['first_audio'])} |" for system, c in corr.items()])


def _throughput_section(results: BenchResults) -> list[str]:
    if not results.throughput:
        return []
    out = ["### Throughput on a mixed load", "",
           "Every run pushes the same shuffled mix of the text classes; piper's figure is its best configuration.",
           "", "| clients | voxpipe req/s | voxpipe audio s/s | voxpipe latency p50 | piper best | piper req/s "
           "| piper audio s/s | piper latency p50 | ratio (req/s) | ratio (audio s per CPU s) |",
           "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for clients, vox, best in throughput_levels(results.throughput):
        cells = [str(clients)]
        cells += ([_f(vox.requests_per_s), _f(vox.audio_per_s), _s(Summary.of(vox.latencies_s).p50)]
                  if vox else ["n/a"] * 3)
        cells += ([best.config, _f(best.requests_per_s), _f(best.audio_per_s),
                   _s(Summary.of(best.latencies_s).p50)] if best else ["n/a"] * 4)
        cells.append(_x(ratio(vox.requests_per_s, best.requests_per_s)) if vox and best else "n/a")
        cells.append(_x(ratio(vox.audio_per_cpu_s, best.audio_per_cpu_s)) if vox and best else "n/a")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Every run, with its CPU: audio seconds per CPU second (the daemon's processes and its "
            "clients, or this process for piper), the serving side's share outside the engine, engine CPU per "
            "second of audio (what the model itself costs), and the cores other processes on the machine kept "
            "busy meanwhile:",
            "", "| clients | system | configuration | req/s | audio s/s | audio s per CPU s | CPU outside engine "
            "| engine CPU s / audio s | other processes (cores) |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r.clients} | {r.system} | {r.config} | {_f(r.requests_per_s)} | {_f(r.audio_per_s)} | "
            f"{_f(r.audio_per_cpu_s)} | {_pct(r.outside_engine)} | {_f(r.engine_per_audio_s, 3)} | "
            f"{_f(r.foreign_cores, 1)} |"
            for r in sorted(results.throughput, key=lambda r: (r.clients, r.system != VOXPIPE, r.config))]
    return out


def _overhead_section(results: BenchResults) -> list[str]:
    o = results.overhead
    if o is None:
        return []
    out = ["### Daemon CPU outside the engine", "",
           f"Over the voxpipe throughput runs: {o.total_s:.1f} s of daemon CPU, {o.engine_s:.1f} s of it "
           f"inside engine calls: **{_pct(o.share)}** outside the engine. For reference, piper in this "
           f"process spent {_pct(o.baseline_share)} of its CPU outside onnxruntime over its throughput runs "
           f"(phonemizing, Python, the benchmark's client threads).", "",
           "| process | CPU s | share | idle CPU (ms per s) |", "|---|---:|---:|---:|"]
    out += [f"| {role} | {seconds:.2f} | {_pct(seconds / o.total_s if o.total_s else math.nan)} | "
            f"{_f(o.idle_per_s[role] * 1000, 1) if role in o.idle_per_s else ''} |"
            for role, seconds in sorted(o.by_role.items(), key=lambda kv: -kv[1])]
    if o.idle_per_s and o.requests and not math.isnan(o.wall_s):
        idle_ms = sum(o.idle_per_s.values()) * 1000
        per_request = (o.total_s - o.engine_s - o.fixed_s) / o.requests
        cpus = results.setup.get("cpus") or 1
        out += ["", f"Idle, the daemon spends {idle_ms:.1f} ms of CPU per second (loops, heartbeats, reports): "
                    f"{o.fixed_s:.2f} s of the {o.total_s - o.engine_s:.2f} s outside the engine over these "
                    f"{_s(o.wall_s)}. The rest is {per_request * 1000:.1f} ms per request (planning, "
                    f"shared-memory copies, merging, relaying). The engine ran {o.engine_s / o.wall_s:.2f} cores "
                    f"on average; with {cpus} cores all its own, the idle part alone would be "
                    f"{_pct(idle_ms / 1000 / cpus)} of them."]
    return out


def _micro_section(results: BenchResults) -> list[str]:
    m = results.micro
    if m is None:
        return []
    out = ["### IPC micro-benchmarks", "", "| measurement | p50 | p99 |", "|---|---:|---:|"]
    rows = [("tiny request through the daemon, null engine (as the client sees it)", m.null_roundtrip_s),
            ("… inside the daemon: the frontend gets it → sends its result", m.null_daemon_s.get("total_s")),
            ("… inside the daemon: the frontend gets it → its audio is back there", m.null_daemon_s.get("first_audio_s")),
            ("… inside the daemon: planned → a worker takes it up", m.null_daemon_s.get("queued_s")),
            ("`Client.ping()` round trip", m.ping_s),
            (f"{m.audio_bytes / 1e3:.0f} kB of audio (10 s float32) via the shared-memory pool", m.shm_s),
            (f"{m.audio_bytes / 1e3:.0f} kB of audio copied through ZeroMQ frames", m.zmq_s)]
    for name, values in rows:
        if values:
            summary = Summary.of(values)
            out.append(f"| {name} | {summary.p50 * 1e3:.3f} ms | {summary.p99 * 1e3:.3f} ms |")
    if m.null_cpu_per_request:
        cpu = sorted(m.null_cpu_per_request.items(), key=lambda kv: -kv[1])
        out += ["", "CPU per tiny request, by process (they handle it one after another, so this adds up along its "
                    "path): " + ", ".join(f"{role} {seconds * 1e6:.0f} µs" for role, seconds in cpu if seconds > 0)
                + f"; {sum(seconds for _, seconds in cpu) * 1e3:.2f} ms in all."]
    return out


def write(results: BenchResults, out_dir: Path, with_plots: bool = True) -> list[Path]:
    """results.json, report.md and, with_plots, the plots (which need matplotlib)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str) + "\n")
    written = [out_dir / "results.json"]
    if with_plots:
        from voxpipe.bench.plots import plot

        written += plot(results, out_dir)
    (out_dir / "report.md").write_text(markdown(results, plots=with_plots))
    written.append(out_dir / "report.md")
    return written
