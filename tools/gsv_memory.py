"""A worker's memory with 1, 2, ... N full-size GPT-SoVITS voices loaded.

    python tools/gsv_memory.py [--voices 4] [--version v2ProPlus] [--size full] [--out gsv-memory]

Writes N random-weight voices (`voxpipe voice random ... --size full`, one pretrained
folder for all), starts a real daemon with one worker and nothing preloaded, then asks
for one short text in each voice in turn (the worker loads it into its voice cache) and
reads the worker's resident memory after each: VmRSS as `voxpipe status` shows it, and
RssAnon (the process's own pages, without the shared-memory pools it has touched).
BERT, HuBERT and the speaker model are held once per worker whatever the number of
voices, so each voice after the first should add only its own decoder and synthesizer.
Prints the table; writes OUT.md and OUT.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voxpipe.bench.daemon import BenchDaemon, DaemonSettings
from voxpipe.bench.soak import rss_anon

ROOT = Path(__file__).resolve().parent.parent
TEXT = "你好，今天天气真不错。"
GIB = 1024 ** 3


def write_voices(voices_dir: Path, count: int, version: str, size: str) -> list[str]:
    names = [f"mem{i}" for i in range(count)]
    for i, name in enumerate(names):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "voice", "random", name, "--family",
                        "gpt-sovits", "--version", version, "--size", size, "--seed", str(i), "-d", str(voices_dir)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        print(f"wrote voice {name} ({version}, {size}) in {time.monotonic() - started:.0f} s", flush=True)
    return names


def daemon_settings(voices_dir: Path) -> DaemonSettings:
    """One worker, nothing preloaded, room in its cache for every voice."""
    return DaemonSettings(workers=1, config=(
        f"voices_dir = {json.dumps(str(voices_dir))}", "preload = []", "preload_popular = 0",
        "worker.voice_cache_mib = 65536.0",
        "supervisor.max_busy_s = 600.0"))  # a full voice loads in tens of seconds on 2 cores


def worker(daemon: BenchDaemon) -> dict:
    return next(p for p in daemon.status()["processes"] if p.get("role") == "worker")


def measure(daemon: BenchDaemon, names: list[str]) -> list[tuple[int, int, int]]:
    """(voices loaded, VmRSS, RssAnon) before any voice and after each."""
    rows = []
    proc = worker(daemon)
    rows.append((0, proc["rss"], rss_anon(proc["pid"])))
    print(f"no voice: worker RSS {proc['rss'] / GIB:.2f} GiB", flush=True)
    for loaded, name in enumerate(names, start=1):
        started = time.monotonic()
        with daemon.client(timeout=600.0) as client:
            client.synthesize(TEXT, name, seed=0)
        proc = worker(daemon)
        rows.append((loaded, proc["rss"], rss_anon(proc["pid"])))
        print(f"{loaded} voice(s): worker RSS {proc['rss'] / GIB:.2f} GiB, RssAnon "
              f"{rows[-1][2] / GIB:.2f} GiB (load and speak {time.monotonic() - started:.0f} s)", flush=True)
    return rows


def table(rows: list[tuple[int, int, int]]) -> list[str]:
    lines = ["| voices loaded | worker RSS (GiB) | RssAnon (GiB) | added by this voice (GiB) |",
             "| --- | --- | --- | --- |"]
    for i, (loaded, rss, anon) in enumerate(rows):
        added = "" if i == 0 else f"{(anon - rows[i - 1][2]) / GIB:+.2f}"
        lines.append(f"| {loaded} | {rss / GIB:.2f} | {anon / GIB:.2f} | {added} |")
    return lines


def plot(rows: list[tuple[int, int, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r[0] for r in rows], [r[1] / GIB for r in rows], marker="o", label="VmRSS")
    ax.plot([r[0] for r in rows], [r[2] / GIB for r in rows], marker="o", label="RssAnon")
    ax.set(xlabel="voices loaded in the worker", ylabel="GiB", ylim=(0, None))
    ax.set_xticks([r[0] for r in rows])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", type=int, default=4)
    parser.add_argument("--version", default="v2ProPlus", choices=["v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"])
    parser.add_argument("--size", default="full", choices=["tiny", "full"])
    parser.add_argument("--out", default="gsv-memory", help="OUT.md and OUT.png are written")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gsv-memory-") as tmp:  # full voices: ~1.3 GB each on disk
        work = Path(tmp)
        names = write_voices(work / "voices", args.voices, args.version, args.size)
        daemon = BenchDaemon(work / "daemon", daemon_settings(work / "voices")).start(wait_s=300.0)
        try:
            rows = measure(daemon, names)
        except BaseException:
            print(daemon.log_tail(), file=sys.stderr)
            raise
        finally:
            daemon.stop()
    header = (f"One worker (CPU, fp32), random-weight {args.size} {args.version} voices loaded one after "
              f"another; one text spoken in each.")
    lines = [header, "", *table(rows)]
    print("\n".join(lines[2:]))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows, Path(args.out + ".png"))
    print(f"wrote {args.out}.md and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
