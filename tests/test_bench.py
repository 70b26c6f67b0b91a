"""The benchmark's own logic: statistics, texts, CPU accounting, the report, and a tiny
end-to-end run (null engine, two short texts, a tiny baseline). No test asserts a speed."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxpipe.bench import report
from voxpipe.bench.daemon import CpuSnapshot, window
from voxpipe.bench.results import PIPER, VOXPIPE, BenchResults, Micro, Overhead, Sample, ThroughputRun
from voxpipe.bench.run import _baseline_configs
from voxpipe.bench.stats import Summary, pearson, percentile, ratio
from voxpipe.bench.texts import (DEFAULT_TEXTS_DIR, LONGFORM, TextsError, load_classes, load_longform, mixed_load,
                                 per_class, scaled_class)
from voxpipe.daemon.cli import build_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- statistics ----------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0, 10, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(1).exponential(size=37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_pearson() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    assert pearson(xs, [2 * x + 1 for x in xs]) == pytest.approx(1.0)
    assert pearson(xs, [-x for x in xs]) == pytest.approx(-1.0)
    assert pearson(xs, [1.0, 3.0, 2.0, 4.0]) == pytest.approx(float(np.corrcoef(xs, [1, 3, 2, 4])[0, 1]))
    assert math.isnan(pearson(xs, [5.0] * 4))  # no spread: undefined, not 0
    assert math.isnan(pearson([1.0], [1.0]))
    with pytest.raises(ValueError):
        pearson(xs, [1.0])


def test_summary_and_ratio() -> None:
    s = Summary.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.n, s.p50, s.mean) == (5, 3.0, 3.0)
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))


# ---- texts -------------------------------------------------------------------------------------
def _texts_dir(tmp_path, lines: list[str], longform: str = "First one. Second one.\n\nAnother paragraph."):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "texts_en.tsv").write_text("# class\ttext\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "longform_en.txt").write_text(longform, encoding="utf-8")
    return tmp_path


def test_texts_load_limit_and_mix(tmp_path) -> None:
    d = _texts_dir(tmp_path, ["short\tHi.", "short\tHello.", "long\tA much longer text here."])
    texts = load_classes(d)
    assert [(t.cls, t.chars) for t in texts] == [("short", 3), ("short", 6), ("long", 24)]
    assert [t.text for t in per_class(texts, 1)] == ["Hi.", "A much longer text here."]
    mix = mixed_load(texts, 3)
    assert len(mix) == 9 and all(sum(m is t for m in mix) == 3 for t in texts)
    assert mix == mixed_load(texts, 3)  # same order every run
    assert load_longform(d).cls == LONGFORM
    assert load_longform(d, paragraphs=1).text == "First one. Second one."


def test_texts_malformed_and_missing(tmp_path) -> None:
    with pytest.raises(TextsError, match=":2:"):
        load_classes(_texts_dir(tmp_path, ["no tab here"]))
    with pytest.raises(TextsError, match="cannot read"):
        load_classes(tmp_path / "nowhere")


def test_default_texts_ship_with_the_package() -> None:
    """The default texts are package data (voxpipe/bench/data/), found from the module."""
    assert DEFAULT_TEXTS_DIR == Path(report.__file__).resolve().parent / "data"
    classes = load_classes(DEFAULT_TEXTS_DIR)
    assert {t.cls for t in classes} == {"short", "medium", "long", "xlong"}
    assert load_longform(DEFAULT_TEXTS_DIR).chars > 1000
    assert (DEFAULT_TEXTS_DIR / "texts_zh.tsv").read_text(encoding="utf-8").strip()
    # The defaults of the command line too.
    assert build_parser("bench").parse_args(["bench"]).texts_dir == DEFAULT_TEXTS_DIR


# ---- matplotlib, the bench extra -----------------------------------------------------------------
WITHOUT_MATPLOTLIB = """import sys
sys.modules["matplotlib"] = None  # as if it were not installed
import voxpipe.bench.cluster, voxpipe.bench.gsv_serve, voxpipe.bench.report, voxpipe.bench.run  # no plots needed
try:
    import voxpipe.bench.plots
except ImportError as exc:
    print(exc)
else:
    sys.exit("voxpipe.bench.plots imported without matplotlib")
"""


def test_plots_without_matplotlib_say_what_to_install() -> None:
    run = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pip install 'voxpipe[bench]'" in run.stdout


def test_a_run_without_matplotlib_writes_no_plots(tmp_path, monkeypatch, capsys) -> None:
    """`voxpipe bench` says so up front and writes the rest (the run itself is stubbed)."""
    from voxpipe.bench import run as bench_run

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "voxpipe.bench.plots", raising=False)
    monkeypatch.setattr(bench_run, "bench", lambda args: (_results(), tmp_path / "out"))
    assert _bench(["--out", str(tmp_path / "out")]) == 0
    assert "pip install 'voxpipe[bench]'" in capsys.readouterr().err
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"results.json", "report.md"}


# ---- CPU accounting ------------------------------------------------------------------------------
def test_cpu_window_splits_engine_time_by_role() -> None:
    roles = {1: "supervisor", 2: "frontend", 3: "worker", 4: "worker"}
    before = CpuSnapshot({1: 1.0, 2: 2.0, 3: 5.0, 4: 5.0}, 8.0, roles)
    after = CpuSnapshot({1: 1.5, 2: 3.0, 3: 15.0, 4: 14.0}, 26.0, roles)
    w = window(before, after)
    assert w is not None
    assert w.total_s == pytest.approx(20.5) and w.engine_s == pytest.approx(18.0)
    assert w.overhead_share == pytest.approx(2.5 / 20.5)
    assert w.by_role["worker (engine)"] == pytest.approx(18.0) and w.by_role["worker"] == pytest.approx(1.0)
    # A replaced process loses its CPU time, and workers that report no engine time: no figure.
    assert window(before, CpuSnapshot({1: 2.0, 2: 3.0, 3: 6.0}, 9.0, roles)) is None
    assert window(before, CpuSnapshot(after.cpu, None, roles)) is None
    # A short-lived helper in the daemon's session (no stage role) may come and go.
    helper_gone = window(CpuSnapshot({**before.cpu, 99: 0.1}, 8.0, roles), after)
    assert helper_gone is not None and helper_gone.total_s == pytest.approx(20.5)


def test_baseline_configs() -> None:
    labels = lambda configs: [(v, t) for v, t, _ in configs]  # noqa: E731
    assert labels(_baseline_configs(1, 2, 16, quick=False)) == [(1, 2), (1, 1)]
    assert labels(_baseline_configs(16, 2, 16, quick=False)) == [(1, 2), (2, 1), (16, 1)]
    assert labels(_baseline_configs(16, 2, 4, quick=False)) == [(1, 2), (2, 1), (4, 1)]
    assert labels(_baseline_configs(4, 2, 2, quick=True)) == [(2, 1)]
    assert labels(_baseline_configs(1, 1, 16, quick=False)) == [(1, 1)]


# ---- report ---------------------------------------------------------------------------------------
def _results() -> BenchResults:
    samples = []
    for cls, chars in (("short", 12), ("long", 130), (LONGFORM, 1800)):
        for i in range(3):
            samples.append(Sample(VOXPIPE, cls, chars, 0.1 * chars / 10 + i * 0.01, 0.3 + i * 0.01, chars / 20))
            samples.append(Sample(PIPER, cls, chars, 0.2 * chars / 10, 0.1 * chars / 10 + 0.5, chars / 20))
    for times, first in ((1, 0.30), (10, 0.31), (50, 0.33)):  # first audio only, of the long form repeated
        samples.append(Sample(VOXPIPE, scaled_class(times), 1800 * times, first, first, 0.5))
    runs = []
    for clients in (1, 16):
        runs.append(ThroughputRun(VOXPIPE, "daemon", clients, 10, 10.0, 60.0, [1.0] * 10, cpu_s=20.0))
        runs.append(ThroughputRun(PIPER, "sequential", clients, 10, 20.0, 60.0, [2.0] * 10, cpu_s=30.0))
        runs.append(ThroughputRun(PIPER, "pool", clients, 10, 10.5, 60.0, [2.0] * 10, cpu_s=21.0))
    return BenchResults({"started": "now", "cpus": 2, "command": "voxpipe bench"}, samples, runs,
                        Overhead(100.0, 97.0, {"worker (engine)": 97.0, "frontend": 3.0}, 50.0, 49.0),
                        Micro(null_roundtrip_s=[0.0008] * 5, null_daemon_s={"total_s": [0.0006] * 5}, ping_s=[0.0002] * 5,
                              shm_s=[0.0005] * 5, zmq_s=[0.0007] * 5, audio_bytes=882000))


def test_goals_and_ratios() -> None:
    results = _results()
    goals = {g.name: g for g in report.goals(results)}
    assert goals["long form: time to first audio"].met is True  # 0.32 / 180.5
    assert goals["long form: total time"].met is True  # 0.5x
    # against piper's best run (the pool), by wall clock and per CPU second
    assert goals["throughput, 16 clients"].measured == "1.05× (per CPU second: 1.05×)"
    assert goals["throughput, 16 clients"].met is False
    assert goals["null-engine round trip p50"].met is True
    assert goals["daemon CPU outside the engine"].measured == "3.0%"
    assert goals["first audio vs text length"].met is True
    assert goals["long form ×50: first audio"].measured == "1.10×"  # 0.33 / 0.30 (x1, measured alike)
    assert goals["long form ×50: first audio"].met is True
    levels = report.throughput_levels(results.throughput)
    assert [(c, v.system, b.config) for c, v, b in levels] == [(1, VOXPIPE, "pool"), (16, VOXPIPE, "pool")]
    r = report.correlations(results.samples)
    assert r[PIPER]["latency"] == pytest.approx(1.0) and r[PIPER]["first_audio"] == pytest.approx(1.0)
    lines = report.ratio_lines(results)
    assert any(line.strip().startswith("longform: latency p50 0.50×") for line in lines)


def test_throughput_rounds_fold_together() -> None:
    run = ThroughputRun(PIPER, "pool", 4, 10, 10.0, 50.0, [1.0], cpu_s=18.0, engine_cpu_s=17.0, foreign_cores=1.0)
    run.add(ThroughputRun(PIPER, "pool", 4, 10, 30.0, 70.0, [2.0], cpu_s=22.0, engine_cpu_s=21.0, foreign_cores=0.0))
    assert (run.requests, run.wall_s, run.audio_s, run.latencies_s) == (20, 40.0, 120.0, [1.0, 2.0])
    assert run.requests_per_s == 0.5 and run.audio_per_cpu_s == 3.0
    assert run.outside_engine == pytest.approx(0.05) and run.foreign_cores == pytest.approx(0.25)  # time-weighted


def test_goals_not_measured_without_baseline() -> None:
    results = BenchResults({}, [Sample(VOXPIPE, "short", 10, 0.1, 0.1, 1.0)])
    goals = {g.name: g for g in report.goals(results)}
    assert goals["long form: time to first audio"].met is None
    assert goals["throughput, 16 clients"].met is None


def test_write_report_files(tmp_path) -> None:
    written = report.write(_results(), tmp_path / "out")
    names = {p.name for p in written}
    assert names == {"results.json", "report.md", *report.PLOTS}
    for name in report.PLOTS:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["samples"]) == 21 and saved["overhead"]["share"] == pytest.approx(0.03)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| longform | | **ratio** | | **0.50×** |" in md
    assert "![throughput_vs_concurrency](throughput_vs_concurrency.png)" in md


# ---- a tiny run through the command ---------------------------------------------------------------
def _bench(argv: list[str]) -> int:
    args = build_parser("bench").parse_args(["bench", *argv])
    return args.handler(args)


def test_bad_clients_option(tmp_path, capsys) -> None:
    assert _bench(["--clients", "0,x", "--out", str(tmp_path)]) == 1
    assert "--clients" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.e2e
def test_tiny_run_writes_everything(tmp_path, capsys) -> None:
    texts = _texts_dir(tmp_path / "texts", ["short\tHello there.", "medium\tGood morning to you all."],
                       "It was late. The lamp was still on.")
    out = tmp_path / "out"
    rc = _bench(["--engine", "null", "--texts-dir", str(texts), "--out", str(out), "--reps", "2",
                 "--clients", "1,2", "--workers", "1", "--max-voices", "2", "--micro-n", "20"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", *report.PLOTS}
    saved = json.loads((out / "results.json").read_text())
    by_system = {s: [x for x in saved["samples"] if x["system"] == s] for s in (VOXPIPE, PIPER)}
    # 2 rounds over 2 texts plus 2 long-form requests, for each system; voxpipe also gives
    # the first audio of the long form x1, x10 and x50, twice each
    assert len(by_system[PIPER]) == 6 and len(by_system[VOXPIPE]) == 6 + 6
    assert {x["cls"] for x in by_system[VOXPIPE]} == {"short", "medium", LONGFORM, scaled_class(1), scaled_class(10),
                                                      scaled_class(50)}
    assert all(0 < x["first_audio_s"] <= x["latency_s"] and x["audio_s"] > 0 for x in saved["samples"])
    clients = sorted({(r["system"], r["clients"]) for r in saved["throughput"]})
    assert clients == [(PIPER, 1), (PIPER, 2), (VOXPIPE, 1), (VOXPIPE, 2)]
    assert all(r["requests"] == 4 and r["audio_s"] > 0 for r in saved["throughput"])  # 2 texts x 2 rounds
    assert all(r["foreign_cores"] >= 0 for r in saved["throughput"])
    overhead = saved["overhead"]
    assert overhead is not None, stdout
    assert overhead["total_s"] > 0 and overhead["engine_s"] >= 0 and overhead["requests"] == 8
    assert {"supervisor", "frontend", "merger", "worker"} <= set(overhead["idle_per_s"])
    micro = saved["micro"]
    assert len(micro["null_roundtrip_s"]) == len(micro["null_daemon_s"]["total_s"]) == len(micro["ping_s"]) == 20
    inside = micro["null_daemon_s"]
    assert all(0 < part <= whole for part, whole in zip(inside["total_s"], micro["null_roundtrip_s"]))
    assert all(0 <= q <= f <= t for q, f, t in zip(inside["queued_s"], inside["first_audio_s"], inside["total_s"]))
    assert len(micro["shm_s"]) == len(micro["zmq_s"]) == 20
    assert {"client", "frontend", "worker", "merger"} <= set(micro["null_cpu_per_request"])
    piper_runs = [r for r in saved["throughput"] if r["system"] == PIPER]
    assert all(r["cpu_s"] >= r["engine_cpu_s"] > 0 for r in piper_runs)  # onnxruntime time is counted
    assert "goal long form: time to first audio" in stdout and "| short | 12 | voxpipe |" in stdout
