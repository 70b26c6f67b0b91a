"""INT8 vs float32 on the bench texts: audio error (SNR) and speed, per text and per class.

    python tools/int8_bench.py [--voice joe] [--methods static,dynamic] [--threads 1] [--repeats 3]

Noise is off (noise_scale = noise_w = 0), so both models are deterministic and the int8
audio's difference from the float32 audio is the quantization error alone. Every text is
run float32 and int8 in alternating order, the same number of times on the same threads,
so both see the same machine load; the median time of each is kept. Writes int8.md (the
tables) and int8.png (the plot) to --out (default results/int8-<time>/).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxpipe.stages.families.piper.engines import create_engine, quantize
from voxpipe.stages.engines.base import Engine, EngineSettings, LoadedVoice
from voxpipe.stages.engines.signal_quality import snr_db
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.phonemize import Phonemizer
from voxpipe.stages.voices import VoiceCatalog
from voxpipe.bench.texts import DEFAULT_TEXTS_DIR, LONGFORM, BenchText, load_classes, load_longform

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    method: str
    cls: str
    text: str
    phonemes: int
    audio_s: float
    fp32_s: float  # median synthesis time
    int8_s: float
    snr_db: float | None  # None: lengths differ
    samples: tuple[int, int]  # float32, int8


def bench_texts(texts_dir: Path) -> list[BenchText]:
    """Every class text, then the long-form text sentence by sentence (as served)."""
    longform = load_longform(texts_dir).text
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", longform.replace("\n", " ")) if s.strip()]
    return load_classes(texts_dir) + [BenchText(LONGFORM, s.strip()) for s in sentences]


def _timed(engine: Engine, voice: LoadedVoice, item: SynthesisItem) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    audio = engine.synthesize(voice, [item])[0]
    return audio, time.perf_counter() - start


def measure(texts: list[BenchText], voice_name: str, voices_dir: Path | None, methods: list[str],
            threads: int, repeats: int, cache_dir: Path | None) -> tuple[list[Row], dict[str, float]]:
    spec = VoiceCatalog(voices_dir).get(voice_name)
    phonemizer = Phonemizer(spec)

    def engine(precision: str, method: str = quantize.DEFAULT_METHOD) -> tuple[Engine, LoadedVoice]:
        options = {"int8_method": method} | ({"int8_cache_dir": str(cache_dir)} if cache_dir else {})
        eng = create_engine("onnx", EngineSettings(threads=threads, precision=precision, options=options))
        return eng, eng.load_voice(spec)

    say(f"loading {voice_name} in float32 and int8 ({', '.join(methods)}; a first int8 load quantizes)")
    runs = {"fp32": engine("fp32")} | {m: engine("int8", m) for m in methods}
    sizes = {name: voice.nbytes / 1e6 for name, (_, voice) in runs.items()}
    rows: list[Row] = []
    for n, bench in enumerate(texts, 1):
        item = SynthesisItem(phonemizer.text_to_ids(bench.text), 0.0, spec.settings.length_scale, 0.0)
        times: dict[str, list[float]] = {name: [] for name in runs}
        audio: dict[str, np.ndarray] = {}
        order = list(runs)
        for r in range(repeats):
            for name in order if r % 2 == 0 else order[::-1]:  # alternate who runs first
                eng, voice = runs[name]
                audio[name], seconds = _timed(eng, voice, item)
                times[name].append(seconds)
        ref = audio["fp32"]
        for method in methods:
            same = len(audio[method]) == len(ref)
            rows.append(Row(method, bench.cls, bench.text, len(item.phoneme_ids), len(ref) / spec.sample_rate,
                            statistics.median(times["fp32"]), statistics.median(times[method]),
                            snr_db(ref, audio[method]) if same else None, (len(ref), len(audio[method]))))
        notes = "  ".join(f"{r.method} {_snr(r.snr_db)} dB ×{r.fp32_s / r.int8_s:.2f}" for r in rows[-len(methods):])
        say(f"[{n}/{len(texts)}] {bench.cls:8} {len(item.phoneme_ids):4} ids  {notes}")
    return rows, sizes


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _snr(value: float | None) -> str:
    return "len≠" if value is None else f"{value:.1f}"


def summary(rows: list[Row]) -> list[tuple[str, str, int, int, str, str, float, float, float]]:
    """(method, class, texts, length mismatches, min SNR, median SNR, fp32 RTF, int8 RTF, speed ratio)."""
    out = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        for cls in [*dict.fromkeys(r.cls for r in mine), "all"]:
            group = mine if cls == "all" else [r for r in mine if r.cls == cls]
            snrs = [r.snr_db for r in group if r.snr_db is not None]
            audio = sum(r.audio_s for r in group)
            fp32, int8 = sum(r.fp32_s for r in group), sum(r.int8_s for r in group)
            out.append((method, cls, len(group), len(group) - len(snrs),
                        f"{min(snrs):.1f}" if snrs else "–", f"{statistics.median(snrs):.1f}" if snrs else "–",
                        fp32 / audio, int8 / audio, fp32 / int8))
    return out


def markdown(rows: list[Row], sizes: dict[str, float], command: str, threads: int) -> str:
    lines = [f"Command: `{command}`", "",
             f"onnxruntime CPU, {threads} thread(s); model sizes: "
             + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items()) + ".", "",
             "| method | class | texts | length differs | SNR min (dB) | SNR median (dB) "
             "| RTF fp32 | RTF int8 | fp32/int8 time |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method, cls, n, bad, lo, med, rtf32, rtf8, ratio in summary(rows):
        bold = "**" if cls == "all" else ""
        lines.append(f"| {method} | {bold}{cls}{bold} | {n} | {bad} | {lo} | {med} "
                     f"| {rtf32:.3f} | {rtf8:.3f} | {ratio:.2f} |")
    lines += ["", "Per text:", "", "| method | class | ids | audio (s) | SNR (dB) | fp32 (s) | int8 (s) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.cls} | {r.phonemes} | {r.audio_s:.2f} | {_snr(r.snr_db)} | "
                     f"{r.fp32_s:.3f} | {r.int8_s:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method and r.snr_db is not None]
        left.scatter([r.audio_s for r in mine], [r.snr_db for r in mine], s=18, label=method)
        right.scatter([r.audio_s for r in mine], [r.fp32_s / r.int8_s for r in mine], s=18, label=method)
    left.axhline(quantize.INAUDIBLE_SNR_DB, color="gray", linestyle="--", label="inaudible (25 dB)")
    right.axhline(1.0, color="gray", linestyle="--")
    for ax, label in ((left, "SNR of int8 vs float32 audio (dB)"), (right, "speed-up (float32 time / int8 time)")):
        ax.set_xlabel("audio length (s)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    fig.suptitle("INT8 vocoder vs float32, bench texts, noise off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="int8_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default="joe")
    parser.add_argument("--voices-dir", type=Path, help="extra voices (as the daemon's voices_dir)")
    parser.add_argument("--methods", default=",".join(quantize.METHODS), help="int8 recipes, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads, both precisions")
    parser.add_argument("--repeats", type=int, default=3, help="runs per text and precision (median kept)")
    parser.add_argument("--texts-dir", type=Path, default=DEFAULT_TEXTS_DIR)
    parser.add_argument("--limit", type=int, help="only the first N texts (quick runs)")
    parser.add_argument("--cache-dir", type=Path, help="int8 model cache (default: the engine's)")
    parser.add_argument("--out", type=Path, help="output folder (default results/int8-<time>)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in quantize.METHODS for m in methods):
        parser.error(f"--methods: choose from {', '.join(quantize.METHODS)}")
    texts = bench_texts(args.texts_dir)[: args.limit]
    rows, sizes = measure(texts, args.voice, args.voices_dir, methods, args.threads, max(1, args.repeats),
                          args.cache_dir)
    out = args.out or ROOT / "results" / time.strftime("int8-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    command = "python tools/int8_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(rows, sizes, command.strip(), args.threads)
    (out / "int8.md").write_text(table, encoding="utf-8")
    plot(rows, out / "int8.png")
    print(table.split("\nPer text:")[0])
    print(f"wrote {out / 'int8.md'} and {out / 'int8.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
