"""Real-time factor of rendering GPT-SoVITS audio from semantic tokens at the released
models' sizes (random weights, built in memory): v3 and v4 (features, CFM at 8 and 32
steps, vocoder) beside v2ProPlus (SoVITS text encoder, flow, HiFi-GAN). The semantic
decoder is the same for every version and left out. The CPU may be shared: numbers are
noisy; compare ratios within one run.

With `--batch 1 2 4` it also times one CFM chunk of several requests in one call
(`MelDecoder.next_mels`) against the same chunks one call each, and prints the speed-up
of the batched call: whether batching pays on this device.

    python tools/gsv_v3_rtf.py [--seconds 2] [--threads 2] [--batch 1 2 4] [--out results/gsv_v3_rtf]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def _v3(version: str, size: str = "full"):
    from voxpipe.stages.families.gpt_sovits.models import bigvgan, vocoder_v4
    from voxpipe.stages.families.gpt_sovits import random_voice_v3 as rv
    from voxpipe.stages.families.gpt_sovits.random_voice import _randomize
    from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig
    from voxpipe.stages.families.gpt_sovits.models.sovits_v3 import SynthesizerV3, V3Config
    from voxpipe.stages.families.gpt_sovits.models.voice_v3 import MelDecoder

    s = rv.SIZE[size]
    g = torch.Generator().manual_seed(0)
    synth = SynthesizerV3(V3Config(SovitsConfig.from_hparams(rv.sovits_hparams(version, size), version, 732), s.dit,
                                   s.bridge, s.wn_layers), version)
    _randomize(synth, g)
    if version == "v3":
        vocoder = bigvgan.BigVGAN(bigvgan.BigVganConfig.from_json({
            "resblock": "1", "num_mels": 100, "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
            "upsample_initial_channel": s.bigvgan_channels, "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5]] * 3, "activation": "snakebeta", "snake_logscale": True,
            "use_tanh_at_final": False, "use_bias_at_final": False, "sampling_rate": 24000}))
    else:
        vocoder = vocoder_v4.v4_vocoder(100, s.v4_channels)
    _randomize(vocoder, g)
    decoder = MelDecoder.from_modules(synth, vocoder, version)
    spec = torch.rand(1, 1025, 300)
    decoder.set_prompt(torch.randint(0, 1024, (1, 150)), list(range(10, 60)), spec,
                       0.1 * torch.randn(decoder.plan.mel.sampling_rate * 6))
    return decoder


def time_v3(decoder, seconds: float, steps: int) -> float:
    tokens = torch.randint(0, 1024, (int(seconds * 25),)).tolist()
    started = time.perf_counter()
    decoder.vocode(decoder.render_mel(tokens, list(range(20, 60)), 1.0, steps, 0))
    return time.perf_counter() - started


def time_mel_batch(decoder, batch: int, seconds: float, steps: int) -> tuple[float, float]:
    """(one call for `batch` jobs, `batch` calls of one job) in seconds: one CFM chunk each."""
    tokens = torch.randint(0, 1024, (int(seconds * 25),)).tolist()

    def jobs():
        return [decoder.start(tokens, list(range(20, 60)), 1.0, steps, seed) for seed in range(batch)]

    together = jobs()
    started = time.perf_counter()
    decoder.next_mels(together)
    batched = time.perf_counter() - started
    alone = jobs()
    started = time.perf_counter()
    for job in alone:
        decoder.next_mels([job])
    return batched, time.perf_counter() - started


def time_v2pro(seconds: float) -> float:
    from voxpipe.stages.families.gpt_sovits.random_voice import _randomize, _sovits_hparams
    from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig, Synthesizer

    hps = _sovits_hparams("v2ProPlus")
    hps["model"].update({"inter_channels": 192, "filter_channels": 768, "n_layers": 6, "upsample_initial_channel": 512,
                         "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3})
    synth = Synthesizer(SovitsConfig.from_hparams(hps, "v2ProPlus", 732)).eval()
    _randomize(synth, torch.Generator().manual_seed(0))
    ge, ge_text = torch.randn(1, 128, 1), torch.randn(1, 512, 1)
    tokens = torch.randint(0, 1024, (1, int(seconds * 25)))
    started = time.perf_counter()
    with torch.no_grad():
        synth.vocode(synth.latent(tokens, torch.randint(1, 700, (1, 40)), ge, ge_text, 0.5), ge)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per rendering")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--batch", type=int, nargs="*", default=[], help="also time batched CFM chunks of these sizes")
    parser.add_argument("--versions", nargs="+", default=["v3", "v4"])
    parser.add_argument("--out", default="results/gsv_v3_rtf")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rows = [("v2ProPlus", "-", time_v2pro(args.seconds))]
    batch_rows: list[tuple[str, int, float, float]] = []
    for version in args.versions:
        decoder = _v3(version)
        time_v3(decoder, 0.5, 1)  # warm-up
        rows += [(version, str(steps), time_v3(decoder, args.seconds, steps)) for steps in args.steps]
        batch_rows += [(version, b, *time_mel_batch(decoder, b, args.seconds, min(args.steps))) for b in args.batch]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"| version | sample_steps | render s | RTF ({args.seconds:g} s audio, {args.threads} threads) |",
             "| --- | --- | --- | --- |"] + [f"| {v} | {s} | {t:.2f} | {t / args.seconds:.2f} |" for v, s, t in rows]
    if batch_rows:
        lines += ["", f"| version | requests per CFM call | one call s | one call each s | speed-up "
                      f"({min(args.steps)} steps) |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {v} | {b} | {t:.2f} | {a:.2f} | {a / t:.2f}x |" for v, b, t, a in batch_rows]
    print("\n".join(lines))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar([f"{v} {s}" for v, s, _ in rows], [t / args.seconds for *_, t in rows])
        ax.set_ylabel("real-time factor")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"))
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
