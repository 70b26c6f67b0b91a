"""The precision of a Piper voice's vocoder on the onnx engine, chosen per machine.

The vocoder (HiFi-GAN) is ~70% of a Piper voice's time. In fp32 it runs as the voice's
split onnx graphs; in bf16 it runs as the same generator in torch, whose bf16
convolutions pay only on CPUs with bf16 units (AVX512-BF16, AMX): elsewhere they are
emulated and many times slower (9x fp32's time for `joe` on an AVX2 CPU), so bf16 is no
candidate there. `auto` (the default) chooses the way GPT-SoVITS voices do
(stages/families/gpt_sovits/precision.py): on a voice's first load on a machine, each
candidate renders the latent of a probe sentence, and the fastest within 30 dB SNR of
fp32's audio wins, by at least MIN_GAIN (timing noise never picks a slower one). bf16
keeps `joe` at 36-41 dB on every bench text (docs/gpt-sovits-serving.md, quality on a
trained network). The choice is cached per machine, model file and library versions, so
later loads and the other workers skip the probe; it is logged and shown in
`voxpipe status`. An explicit bf16 on a machine without bf16 units falls back to fp32,
and says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxpipe.stages.engines import choice_cache
from voxpipe.stages.engines.busy_board import usable_cores
from voxpipe.stages.engines.machine import BF16_FLAGS, PROBE_FLAGS, cpu_flags, cpu_model
from voxpipe.stages.engines.signal_quality import snr_db

AUTO = "auto"
CHOICES = ("fp32", "bf16")
MIN_SNR_DB = 30.0  # the renderer bound GPT-SoVITS voices use too
MIN_GAIN = 1.05
PROBE_TEXT = "Performance tuning of a speech service starts with measuring where time goes."
PROBE_RUNS = 3  # each candidate's time is its best of this many renders
PROBE_VERSION = 1  # bump when the probe changes: cached choices are then probed again

Render = Callable[[], np.ndarray]  # the probe latent's audio in one precision


class VocoderPrecisionError(ValueError):
    """A vocoder precision setting names no precision."""


@dataclass
class VocoderChoice:
    """What a voice's vocoder runs in, and why."""

    precision: str = "fp32"
    how: str = "configured"  # configured | probed | cached | only fp32 here
    notes: list[str] = field(default_factory=list)  # fallbacks, and the probe's figures

    def details(self) -> dict[str, Any]:
        """For `voxpipe status`, beside a GPT-SoVITS voice's precisions."""
        return {"precision": f"vocoder {self.precision} ({self.how})", "precision_notes": list(self.notes)}


def check(value: str) -> str:
    if value != AUTO and value not in CHOICES:
        raise VocoderPrecisionError(f"vocoder precision {value!r}: use auto or one of {', '.join(CHOICES)}")
    return value


def bf16_at_speed() -> bool:
    return bool(cpu_flags() & BF16_FLAGS)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxpipe" / "vocoder-precision"


def cache_key(model_digest: str, wanted: str) -> str:
    """Machine, libraries and the model's contents: a choice holds while none of them changes."""
    import onnxruntime
    import torch

    fields = {"probe": PROBE_VERSION, "cpu": cpu_model(), "flags": sorted(cpu_flags() & PROBE_FLAGS),
              "cores": usable_cores(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "model": model_digest, "wanted": wanted}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def choose(wanted: str, renderer: Callable[[str], Render], key: Callable[[], str],
           cache_dir: Path | None = None, bf16_anywhere: bool = False) -> VocoderChoice:
    """The precision of one voice's vocoder. `renderer(precision)` makes the probe's render
    in that precision (only called when a probe runs); `key()` names the cached choice.
    `bf16_anywhere` makes bf16 a candidate without bf16 units (tests of its bounds)."""
    check(wanted)
    at_speed = bf16_anywhere or bf16_at_speed()
    choice = VocoderChoice()
    if wanted == "fp32":
        return choice
    if not at_speed:
        if wanted == "bf16":
            choice.notes.append("vocoder bf16 is not run at speed here (this CPU has no bf16 units): fp32")
        else:
            choice.how = "only fp32 here"
        return choice
    if wanted == "bf16":
        choice.precision = "bf16"
        return choice
    directory = cache_dir or default_cache_dir()
    name = key()
    with choice_cache.probe_lock(directory, name):
        cached = choice_cache.read(directory, name)
        if cached is not None and cached.get("precision") in CHOICES:
            choice.precision, choice.how = cached["precision"], "cached"
            choice.notes = [str(n) for n in cached.get("notes", [])]
        else:
            choice.precision, note = _probe(renderer)
            choice.how, choice.notes = "probed", [note]
            choice_cache.write(directory, name, {"precision": choice.precision, "notes": choice.notes})
    return choice


def _probe(renderer: Callable[[str], Render]) -> tuple[str, str]:
    """Time fp32 and bf16 on the probe latent; -> (the fastest within bounds, what was seen)."""
    results: dict[str, tuple[float, bool, str]] = {}
    reference: np.ndarray | None = None
    for candidate in CHOICES:  # fp32 first: the reference
        try:
            render = renderer(candidate)
            seconds, audio = float("inf"), np.zeros(0, np.float32)
            for _ in range(PROBE_RUNS):
                started = time.perf_counter()
                audio = render()
                seconds = min(seconds, time.perf_counter() - started)
        except Exception as exc:  # a precision that does not run here is no candidate
            results[candidate] = (float("inf"), False, f"failed: {type(exc).__name__}: {exc}")
            continue
        if reference is None:
            reference, results[candidate] = audio, (seconds, True, "")
            continue
        snr = snr_db(reference, audio) if len(audio) == len(reference) else float("-inf")
        within = snr >= MIN_SNR_DB
        results[candidate] = (seconds, within, f"{snr:.1f} dB" + ("" if within else f", under {MIN_SNR_DB:g}"))
    fp32_s = results["fp32"][0]
    best = "fp32"
    for candidate, (seconds, within, _) in results.items():
        if within and seconds * MIN_GAIN < fp32_s and seconds < results[best][0]:
            best = candidate
    note = "vocoder: " + ", ".join(f"{c} {s * 1000:.0f} ms" + (f" ({why})" if why else "")
                                   for c, (s, _, why) in results.items()) + f" -> {best}"
    return best, note


class TorchVocoder:
    """A Piper voice's HiFi-GAN generator in torch at a reduced precision, rebuilt from the
    voice's own onnx weights: latent frames -> audio, as the split vocoder graph renders."""

    def __init__(self, model_path: Path, name: str, num_speakers: int, precision: str) -> None:
        import torch

        from voxpipe.stages.families.piper.vits.load import load_piper_onnx

        dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
        model = load_piper_onnx(model_path, name, num_speakers).eval()
        for part in ("enc_p", "dp", "flow"):  # the onnx graphs run these
            delattr(model, part)
        model.dec.to(dtypes[precision])
        self.model = model
        self.multi_speaker = model.cfg.n_speakers > 1
        self.nbytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def render(self, z: np.ndarray, speaker_id: int, threads: int) -> np.ndarray:
        """Audio of latent `z` [1, channels, frames] on `threads` torch threads."""
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        sid = torch.tensor([speaker_id], dtype=torch.long) if self.multi_speaker else None
        with torch.inference_mode():
            audio = self.model.vocode(torch.from_numpy(np.ascontiguousarray(z)), sid=sid)
        return audio.float().numpy().reshape(-1)
