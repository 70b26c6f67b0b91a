"""The precision of each part of a GPT-SoVITS voice, chosen per machine.

Three parts run in a precision of their own:
- the semantic decoder's batched serving steps: fp32, bf16, fp16 (GPUs), int8 (weights,
  CPU: decoder/int8.py);
- its serving prefills (each text's first pass, alone): fp32 or int8 (CPU), the same int8
  products as the steps. On a CPU a burst's prefills are much of its first audio;
- the renderer's vocoder (the SoVITS HiFi-GAN decoder of v1-v2ProPlus voices): fp32,
  bf16, fp16 (GPUs).

`auto` (the default) probes on a voice's first load on a machine: each candidate the
machine can run is timed on a few fixed texts and compared with fp32, and the fastest
within bounds wins: the decoder's greedy tokens on the probe texts equal fp32's, the
vocoder's audio is at least 30 dB SNR against fp32's. The prefill is probed after the
steps, beside the steps' choice: int8 prefills must leave every greedy token as fp32's
too. bf16 is a candidate only where the CPU has bf16 units (AVX512-BF16, AMX) or on a
GPU: elsewhere it is emulated and many times slower. The choice is cached per machine, model files and library versions, so
later loads (and the other workers) skip the probe; it is logged and shown in
`voxpipe status`. An explicit precision the machine cannot run falls back to fp32, and
says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxpipe.stages.engines import choice_cache
from voxpipe.stages.engines.busy_board import usable_cores
from voxpipe.stages.engines.machine import BF16_FLAGS, PROBE_FLAGS, cpu_flags, cpu_model
from voxpipe.stages.engines.signal_quality import snr_db
from voxpipe.stages.families.gpt_sovits.voice_config import PRECISIONS

AUTO = "auto"
PARTS = ("decoder", "renderer")  # probed each alone
ALL_PARTS = (*PARTS, "prefill")  # the prefill is probed beside the decoder's choice
CHOICES = PRECISIONS
MIN_RENDERER_SNR_DB = 30.0
MIN_GAIN = 1.05  # a candidate must beat fp32 by this much: timing noise never picks a slower one
PROBE_TEXTS = (("zh", "今天天气很好，我们去公园散步吧。"), ("en", "The quick brown fox jumps over the lazy dog."),
               ("zh", "你好，世界。"), ("en", "See you again tomorrow morning."))
PROBE_TOKENS = 24  # greedy tokens decoded per probe text
PROBE_FRAMES = 96  # latent frames the vocoder renders per probe run (about 2 s of audio)
PROBE_VERSION = 2  # bump when the probe changes: old cached choices are then probed again
_LOG = logging.getLogger(__name__)


class PrecisionError(ValueError):
    """A precision setting names no precision of its part."""


@dataclass
class PrecisionChoice:
    """What a voice runs in, and why."""

    decoder: str = "fp32"
    renderer: str = "fp32"
    prefill: str = "fp32"
    how: str = "configured"  # configured | probed | cached
    notes: list[str] = field(default_factory=list)  # fallbacks, and the probe's figures
    probe_s: float = 0.0

    def summary(self) -> str:
        return f"decoder {self.decoder}, prefill {self.prefill}, renderer {self.renderer} ({self.how})"


def check(part: str, value: str) -> str:
    if value != AUTO and value not in CHOICES[part]:
        raise PrecisionError(f"{part} precision {value!r}: use auto or one of {', '.join(CHOICES[part])}")
    return value


def cpu_has_bf16() -> bool:
    return bool(cpu_flags() & BF16_FLAGS)


def runnable(part: str, device: torch.device) -> list[str]:
    """The precisions of a part this machine runs at speed, fp32 first."""
    if device.type == "cuda":
        if part == "prefill":
            return ["fp32"]
        out = ["fp32", "fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        return out
    out = ["fp32"]
    if cpu_has_bf16() and part != "prefill":
        out.append("bf16")
    if part in ("decoder", "prefill"):
        from voxpipe.stages.families.gpt_sovits.decoder.int8 import int8_available

        if int8_available():
            out.append("int8")
    return out


def apply(model: Any, decoder: str, renderer: str, prefill: str = "fp32") -> None:
    """Set a GsvModel's parts to run in these precisions."""
    model.t2s.precision = decoder
    model.t2s.prefill_precision = prefill
    if hasattr(getattr(model, "synth", None), "set_vocoder_precision"):
        model.synth.set_vocoder_precision(renderer)


def choose(model: Any, wanted: dict[str, str], cache_dir: Path | None) -> PrecisionChoice:
    """The precisions `model` (a loaded GsvModel with its prompt) runs in, applied to it.
    `wanted`: part -> auto or a precision."""
    device = model.device
    # v3/v4: their CFM renderer and vocoders stay in the model's own precision.
    renders = hasattr(getattr(model, "synth", None), "set_vocoder_precision")
    choice = PrecisionChoice()
    probe: dict[str, list[str]] = {}
    for part in ALL_PARTS:
        value = check(part, wanted.get(part, AUTO))
        possible = runnable(part, device) if (part != "renderer" or renders) else ["fp32"]
        if value == AUTO:
            probe[part] = possible
        elif value in possible:
            setattr(choice, part, value)
        else:
            choice.notes.append(f"{part} {value} is not run at speed here ({_machine_words(device)}): fp32")
    if any(len(c) > 1 for c in probe.values()):
        key = cache_key(model, {p: wanted.get(p, AUTO) for p in ALL_PARTS})
        # One probe per machine and model: workers loading the voice at once wait for the
        # first one's choice instead of timing their own, which could differ under load
        # (and then one seed would render differently on each worker).
        with _probe_lock(cache_dir, key):
            cached = _read_cache(cache_dir, key)
            if cached is not None:
                for part in probe:
                    setattr(choice, part, cached[part])
                choice.how, choice.notes = "cached", choice.notes + list(cached.get("notes", []))
            else:
                started = time.perf_counter()
                notes: list[str] = []
                decodes = _Decodes(model)
                for part in ALL_PARTS:  # the prefill last: it is probed beside the steps' choice
                    candidates = probe.get(part, [])
                    if len(candidates) > 1:
                        setattr(choice, part, _probe(part, model, candidates, notes, decodes, choice.decoder))
                    elif candidates:
                        setattr(choice, part, "fp32")
                choice.how, choice.probe_s = "probed", time.perf_counter() - started
                choice.notes += notes
                _write_cache(cache_dir, key, {part: getattr(choice, part) for part in ALL_PARTS} | {"notes": notes})
    elif probe:
        choice.how = "configured" if len(probe) < len(ALL_PARTS) else "only fp32 here"
    apply(model, choice.decoder, choice.renderer, choice.prefill)
    return choice


def _machine_words(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "this CPU has no bf16 units" if not cpu_has_bf16() else "this CPU"


def cache_key(model: Any, wanted: dict[str, str]) -> str:
    """Machine, libraries and the model files' contents: a choice holds while none of them changes."""
    device = model.device
    flags = sorted(cpu_flags() & PROBE_FLAGS)
    files = [file_digest(p) for p in (model.files.gpt, model.files.sovits)]
    fields = {"probe": PROBE_VERSION, "cpu": cpu_model(), "flags": flags, "cores": usable_cores(),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "quantized": torch.backends.quantized.supported_engines,
              "files": files, "wanted": wanted}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a model file (a few hundred MB at most: under a second), remembered per
    path, size and mtime: the same weights anywhere share a choice, changed ones do not."""
    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _digests[key] = h.hexdigest()
    return digest


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxpipe" / "gsv-precision"


def _probe_lock(cache_dir: Path | None, key: str) -> contextlib.AbstractContextManager[None]:
    return choice_cache.probe_lock(cache_dir or default_cache_dir(), key)


def _read_cache(cache_dir: Path | None, key: str) -> dict | None:
    data = choice_cache.read(cache_dir or default_cache_dir(), key)
    if data is None or not all(data.get(p) in CHOICES[p] for p in ALL_PARTS):
        return None
    return data


def _write_cache(cache_dir: Path | None, key: str, data: dict) -> None:
    choice_cache.write(cache_dir or default_cache_dir(), key, data)


# ------------------------------------------------------------------------- probes


def _probe(part: str, model: Any, candidates: list[str], notes: list[str], decodes: "_Decodes",
           steps: str) -> str:
    """Times each candidate (fp32 first) and checks it against fp32's output; -> the
    fastest within bounds, fp32 unless another beats it by MIN_GAIN. The prefill's
    candidates run beside the steps' choice `steps` (whose tokens equal fp32's)."""
    if part == "decoder":
        run, compare = (lambda p: decodes.steps(p)), _same_tokens
    elif part == "prefill":
        run, compare = (lambda p: decodes.prefill(steps, p)), _same_tokens
    else:
        run, compare = (lambda p: _render(model, p)), _close_audio
    seconds, reference = run("fp32")
    results: dict[str, tuple[float, bool, str]] = {"fp32": (seconds, True, "")}
    for candidate in candidates:
        if candidate == "fp32":
            continue
        try:
            seconds, output = run(candidate)
            results[candidate] = (seconds, *compare(reference, output))
        except Exception as exc:  # a precision that does not run here is no candidate
            results[candidate] = (float("inf"), False, f"failed: {type(exc).__name__}: {exc}")
    best = "fp32"
    for candidate, (seconds, within, _) in results.items():
        if within and seconds * MIN_GAIN < results["fp32"][0] and seconds < results[best][0]:
            best = candidate
    notes.append(f"{part}: " + ", ".join(f"{c} {s * 1000:.0f} ms" + (f" ({why})" if why else "")
                                         for c, (s, _, why) in results.items()) + f" -> {best}")
    return best


@dataclass
class _Decoded:
    steps_s: float  # the batched steps after the prefills (best of two)
    prefill_s: float  # the prefills (best of two)
    tokens: list[list[int]]


class _Decodes:
    """The probe texts decoded per (steps, prefill) precision, each once: the decoder's
    probe and the prefill's share the fp32 run."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._runs: dict[tuple[str, str], _Decoded] = {}

    def run(self, steps: str, prefill: str) -> _Decoded:
        if (steps, prefill) not in self._runs:
            self._runs[steps, prefill] = _decode(self.model, steps, prefill)
        return self._runs[steps, prefill]

    def steps(self, precision: str) -> tuple[float, list[list[int]]]:
        decoded = self.run(precision, "fp32")
        return decoded.steps_s, decoded.tokens

    def prefill(self, steps: str, precision: str) -> tuple[float, list[list[int]]]:
        decoded = self.run(steps, precision)
        return decoded.prefill_s, decoded.tokens


def _decode(model: Any, precision: str, prefill: str = "fp32") -> _Decoded:
    """Greedy tokens of the probe texts decoded together: prefills in `prefill`, then the
    decoder's steps in `precision`; -> the prefills' and the steps' times (best of two each)
    and the tokens."""
    from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, sequence_for
    from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling
    from voxpipe.stages.families.gpt_sovits.models.voice import TextSegment, batch_text_inputs
    from voxpipe.stages.families.gpt_sovits.text import segments

    texts = [[TextSegment(s.lang, s.norm_text, tuple(s.ids), tuple(s.word2ph)) for s in segments(text, lang)]
             for lang, text in PROBE_TEXTS]
    inputs = batch_text_inputs([(model, segs) for segs in texts])
    greedy = Sampling(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
    previous = model.t2s.precision, model.t2s.prefill_precision
    model.t2s.precision, model.t2s.prefill_precision = precision, prefill
    best, best_prefill, tokens = float("inf"), float("inf"), []
    try:
        for _ in range(2):
            decoder = ContinuousDecoder(len(texts))
            seqs = [sequence_for(model, i, f"probe{i}", segs, greedy, 0, PROBE_TOKENS, text)
                    for i, (segs, text) in enumerate(zip(texts, inputs))]
            for seq in seqs:
                decoder.add(seq)
            started = time.perf_counter()
            decoder.step()  # the prefills
            best_prefill = min(best_prefill, time.perf_counter() - started)
            started = time.perf_counter()
            while len(decoder):
                decoder.step()
            best = min(best, time.perf_counter() - started)
            tokens = [seq.tokens for seq in seqs]
    finally:
        model.t2s.precision, model.t2s.prefill_precision = previous
    return _Decoded(best, best_prefill, tokens)


def _same_tokens(reference: list[list[int]], tokens: list[list[int]]) -> tuple[bool, str]:
    same = tokens == reference
    return same, "" if same else "greedy tokens differ from fp32's"


def _render(model: Any, precision: str) -> tuple[float, np.ndarray]:
    """The vocoder in `precision` on the latent of the voice's own reference tokens;
    -> its time (best of three) and its audio."""
    synth, prompt = model.synth, model._prompt()
    with torch.inference_mode():
        phones = torch.tensor([prompt.phone_ids], dtype=torch.long, device=model.device)
        z = synth.latent(prompt.tokens[:, :PROBE_FRAMES // 2], phones, prompt.ge, prompt.ge_text, 0.0, 1.0, None)
        previous = synth.vocoder_precision
        synth.set_vocoder_precision(precision)
        try:
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                audio = synth.run_vocoder(z, prompt.ge)[0, 0].cpu().numpy()
                best = min(best, time.perf_counter() - started)
        finally:
            synth.set_vocoder_precision(previous)
    return best, audio


def _close_audio(reference: np.ndarray, audio: np.ndarray) -> tuple[bool, str]:
    snr = snr_db(reference, audio, trim=True)
    if snr >= MIN_RENDERER_SNR_DB:
        return True, f"{snr:.1f} dB"
    return False, f"{snr:.1f} dB SNR, under {MIN_RENDERER_SNR_DB:g}"


