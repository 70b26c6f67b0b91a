"""How close each vocoder precision comes to fp32 on a trained voice: the bundled `joe`.

    python tools/renderer_quality.py [--threads 1] [--precisions bf16 fp16 onnx int8] [--limit N] [--out DIR]

`joe`'s decoder is the HiFi-GAN generator family GPT-SoVITS's SoVITS vocoder belongs to,
and unlike the random test voices it is trained, so its error is the one listeners would
hear. Every bench text (the classes of texts_en.tsv, then the long-form text sentence by
sentence), noise off: our torch VITS makes the latent once in fp32; the vocoder then
renders it in fp32 (the reference) and in each precision: torch bf16 and fp16 (a
converted copy of the decoder), onnxruntime fp32 and int8 (the onnx engine's split
vocoder graph, static QDQ int8). Per text: SNR against fp32 and the log-mel distance (mean
absolute difference of 80-band log mel spectra in dB, floored 80 dB below the loudest
band), and each rendering's time (int8's includes its acoustic part: its one graph
starts from the ids).

A precision under 30 dB SNR on joe is no default anywhere (precision.py's bound).
Writes renderer-quality.md (tables) and renderer-quality.png to --out.
"""
from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR, LONGFORM, BenchText, load_classes, load_longform
from voxpipe.stages.engines.machine import cpu_flags, cpu_model
from voxpipe.stages.engines.signal_quality import snr_db
from voxpipe.stages.families.gpt_sovits.precision import MIN_RENDERER_SNR_DB
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.phonemize import Phonemizer
from voxpipe.stages.families.piper.spec import bundled_voice
from voxpipe.stages.families.piper.vits.load import load_piper_onnx

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("bf16", "fp16", "onnx", "int8")


def bench_texts(limit: int | None) -> list[BenchText]:
    longform = load_longform(DEFAULT_TEXTS_DIR).text
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", longform.replace("\n", " ")) if s.strip()]
    texts = load_classes(DEFAULT_TEXTS_DIR) + [BenchText(LONGFORM, s.strip()) for s in sentences]
    return texts[:limit] if limit else texts


def log_mel_distance(reference: np.ndarray, other: np.ndarray, rate: int) -> float:
    """Mean absolute difference of 80-band log10 mel spectra, in dB."""
    import librosa

    n = min(len(reference), len(other))
    mels = [librosa.feature.melspectrogram(y=a[:n].astype(np.float32), sr=rate, n_fft=1024, hop_length=256, n_mels=80)
            for a in (reference, other)]
    floor = float(mels[0].max()) * 1e-8  # 80 dB below the loudest band: silence compares as silence
    return float(np.mean(np.abs(10 * np.log10(np.maximum(mels[0], floor)) - 10 * np.log10(np.maximum(mels[1], floor)))))


class Renderers:
    """The vocoder of joe in each precision, over one latent."""

    def __init__(self, precisions: list[str], threads: int) -> None:
        from voxpipe.stages.engines.base import EngineSettings
        from voxpipe.stages.families.piper.engines import create_engine

        self.spec = bundled_voice()
        self.model = load_piper_onnx(self.spec.model_path, "joe", 1).eval()
        self.phonemizer = Phonemizer(self.spec)
        self.decoders = {name: copy.deepcopy(self.model.dec).to(TORCH_DTYPES[name])
                         for name in precisions if name in TORCH_DTYPES}
        self.engines = {}
        self.item = SynthesisItem(np.zeros(1, dtype=np.int64), 0.0, 1.0, 0.0)  # speaker 0
        for name in [p for p in precisions if p in ("onnx", "int8")]:
            settings = EngineSettings(threads=threads, precision="fp32" if name == "onnx" else "int8",
                                      options={"loudness": False, "max_threads": threads})
            engine = create_engine("onnx", settings)
            self.engines[name] = (engine, engine.load_voice(self.spec))

    def latent(self, text: str) -> tuple[torch.Tensor, np.ndarray]:
        ids = self.phonemizer.text_to_ids(text)
        z, _ = self.model.acoustic(torch.tensor([ids]), torch.tensor([len(ids)]), 0.0, 1.0, 0.0)
        return z, np.asarray(ids, dtype=np.int64)

    def render(self, name: str, z: torch.Tensor, ids: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        if name == "fp32":
            audio = self.model.dec(z)[0, 0].numpy()
        elif name in self.decoders:
            decoder = self.decoders[name]
            audio = decoder(z.to(next(decoder.parameters()).dtype)).float()[0, 0].numpy()
        else:
            engine, voice = self.engines[name]
            if engine._model(voice).vocoder is not None:  # the split vocoder graph over the same latent
                frames = z.shape[2]
                audio = engine._vocode(voice, z.numpy(), 0, frames, 0, frames, self.item, engine.cores.base)
            else:  # int8: one quantized graph from the ids (noise off: its fp32 acoustic part makes the same latent)
                audio = engine.synthesize(voice, [SynthesisItem(ids, 0.0, 1.0, 0.0)])[0]
        return audio, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="renderer_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N texts")
    parser.add_argument("--out", type=Path, default=Path("results") / "renderer-quality")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    renderers = Renderers(args.precisions, args.threads)
    rate = renderers.spec.sample_rate
    texts = bench_texts(args.limit)
    rows: list[tuple[str, str, str, float, float, float]] = []  # class, text, precision, snr, mel, time ratio
    with torch.inference_mode():
        for k, text in enumerate(texts, 1):
            z, ids = renderers.latent(text.text)
            reference, base_s = renderers.render("fp32", z, ids)
            for name in args.precisions:
                audio, seconds = renderers.render(name, z, ids)
                rows.append((text.cls, text.text, name, snr_db(reference, audio, trim=True),
                             log_mel_distance(reference, audio, rate), seconds / base_s))
            print(f"[{k}/{len(texts)}] {text.cls:9} " + "  ".join(
                f"{r[2]} {r[3]:5.1f} dB {r[4]:.3f} dB-mel {r[5]:.2f}x time" for r in rows[-len(args.precisions):]),
                flush=True)
    lines = [f"`joe`, {len(texts)} bench texts, noise off, {args.threads} thread(s); CPU: {cpu_model()} "
             f"({' '.join(sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'avx512_vnni'}))}).",
             "", "| precision | SNR min (dB) | SNR median (dB) | log-mel distance median (dB) | log-mel max (dB) "
             "| time / fp32 (median) | default possible |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.precisions:
        mine = [r for r in rows if r[2] == name]
        snrs, mels, times = [r[3] for r in mine], [r[4] for r in mine], [r[5] for r in mine]
        lines.append(f"| {name} | {min(snrs):.1f} | {statistics.median(snrs):.1f} | {statistics.median(mels):.3f} "
                     f"| {max(mels):.3f} | {statistics.median(times):.2f} | "
                     f"{'yes' if min(snrs) >= MIN_RENDERER_SNR_DB else 'no (under 30 dB)'} |")
    lines += ["", "Per text:", "", "| class | precision | SNR (dB) | log-mel (dB) | time / fp32 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r[0]} | {r[2]} | {r[3]:.1f} | {r[4]:.3f} | {r[5]:.2f} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "renderer-quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(rows, args.precisions, args.out / "renderer-quality.png")
    print("\n".join(lines[:4 + len(args.precisions)]))
    print(f"wrote {args.out}/renderer-quality.md and .png")
    return 0


def _plot(rows: list, precisions: list[str], path: Path) -> None:
    from voxpipe.bench.plots import plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in precisions:
        mine = [r for r in rows if r[2] == name]
        axes[0].plot(range(len(mine)), [r[3] for r in mine], marker="o", label=name)
        axes[1].plot(range(len(mine)), [r[5] for r in mine], marker="o", label=name)
    axes[0].axhline(MIN_RENDERER_SNR_DB, color="grey", linestyle="--")
    axes[0].set(xlabel="bench text", ylabel="SNR against fp32 (dB)")
    axes[1].set(xlabel="bench text", ylabel="time / fp32")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
