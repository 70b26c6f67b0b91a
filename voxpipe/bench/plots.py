"""The benchmarks' PNG plots (matplotlib, Agg backend: no display needed).

This module needs matplotlib, which comes with the `bench` extra; without it, importing
the module fails with an ImportError that says what to install. The benchmarks import it
only to draw (`voxpipe bench --no-plots` runs without it)."""
from __future__ import annotations

from pathlib import Path

from voxpipe.bench.results import PIPER, PLOTS, VOXPIPE, BenchResults, throughput_levels

MISSING = "the benchmark plots need matplotlib: pip install 'voxpipe[bench]'"

try:
    import matplotlib
except ImportError as exc:
    raise ImportError(MISSING) from exc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

__all__ = ["MISSING", "PLOTS", "plot", "plt"]


def plot(results: BenchResults, out_dir: Path) -> list[Path]:
    """`voxpipe bench`'s plots into out_dir. -> the files written."""
    colors = {VOXPIPE: "tab:blue", PIPER: "tab:orange"}
    written = []
    for name, attr, title in (("latency_vs_length.png", "latency_s", "Latency vs text length"),
                              ("first_audio_vs_length.png", "first_audio_s", "Time to first audio vs text length")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in (VOXPIPE, PIPER):
            mine = [s for s in results.samples if s.system == system]
            if mine:
                ax.scatter([s.chars for s in mine], [getattr(s, attr) for s in mine], s=18, alpha=0.7,
                           color=colors[system], label=system)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("text length (characters)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    levels = throughput_levels(results.throughput)
    for system, pick in ((VOXPIPE, 1), (PIPER, 2)):
        points = [(lvl[0], lvl[pick]) for lvl in levels if lvl[pick] is not None]
        if points:
            label = system if system == VOXPIPE else "piper (best)"
            left.plot([c for c, _ in points], [r.requests_per_s for _, r in points], "o-", color=colors[system], label=label)
            right.plot([c for c, _ in points], [r.audio_per_s for _, r in points], "o-", color=colors[system], label=label)
    for ax, label in ((left, "requests / s"), (right, "audio seconds / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([lvl[0] for lvl in levels])
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Throughput on a mixed load")
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[2], dpi=110)
    plt.close(fig)
    written.append(out_dir / PLOTS[2])
    return written
