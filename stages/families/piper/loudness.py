"""A Piper voice's output level: one gain per voice, the same whatever engine speaks it.

Piper scales every sentence so that its peak reaches full scale; Piper voices' raw output
is several dB quieter than that. Scaling each chunk by its own peak would make the level
jump at the joins of a request's chunks (and cannot be done while a chunk streams), so a
voice gets one gain instead: the one that gives a set of reference sentences, together,
the level Piper's per-sentence scaling gives them. They are synthesized without noise, so
every worker measures the same gain. Peaks that the gain pushes past full scale are
rounded off by a soft limiter that acts on each sample alone, so windowed and whole
decodes stay identical.

The gain belongs to the pipeline, not to an engine: the Piper runner applies it to every
piece of audio an engine hands back (whole chunks and streamed windows alike), so onnx,
torch and TensorRT speak a voice at one level. It is measured once per model file and
kept in a cache keyed by the file's contents (`VoiceLevels`), so a restart does not pay
for it again.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from voxpipe.stages.engines.base import Engine, LoadedVoice
from voxpipe.stages.voices import VoiceSpec

_LOG = logging.getLogger(__name__)
LEVEL_FORMAT = 1  # bump when the measurement changes: older cached gains are then measured again

# Sentences of different shapes and lengths: a sentence's peak-to-level ratio varies by
# more than a factor of two, so the gain is measured over a dozen.
REFERENCE_TEXTS = (
    "The lighthouse at the end of the northern pier was painted white.",
    "Would you like to come with us to the market tomorrow morning?",
    "Storms rolled in from the sea, and the keeper lit the lamp an hour early.",
    "Nobody expected the museum to open again so soon.",
    "Good evening, and thanks for waiting.",
    "She asked whether the letters had arrived before noon.",
    "Turn left at the bakery, then walk two blocks to the river.",
    "I think we should try again later.",
    "A small boat drifted past the harbour wall in the fog.",
    "Hello, how are you?",
    "Thank you very much.",
    "See you tomorrow.",
)
KNEE = 0.9  # the limiter leaves samples below this untouched
MAX_GAIN = 30.0  # a near-silent voice is not amplified without bound


class LevelError(ValueError):
    """The reference audio was empty or silent: no gain can be measured."""


def peak_gain(audios: Sequence[np.ndarray]) -> float:
    """The gain that gives `audios`, joined, the RMS level they have when each is scaled to
    a full-scale peak (as Piper does per sentence); capped at MAX_GAIN."""
    kept = [np.asarray(a, dtype=np.float64) for a in audios if a.size and np.max(np.abs(a)) > 1e-6]
    if not kept:
        raise LevelError("the reference sentences came out silent")
    energy = sum(float(np.sum(a * a)) for a in kept)
    scaled = sum(float(np.sum(a * a)) / float(np.max(np.abs(a))) ** 2 for a in kept)
    return float(min(MAX_GAIN, np.sqrt(scaled / energy)))


def apply_gain(audio: np.ndarray, gain: float, knee: float = KNEE) -> np.ndarray:
    """audio * gain, with samples past `knee` bent smoothly towards full scale (never past it)."""
    out = np.asarray(audio, dtype=np.float32) * np.float32(gain)
    over = np.abs(out) > knee
    if over.any():
        room = 1.0 - knee
        excess = np.abs(out[over]) - knee
        out[over] = np.sign(out[over]) * (knee + room * np.tanh(excess / room))
    return out


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for silence)."""
    x = np.asarray(audio, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/voxpipe/piper-level (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "voxpipe" / "piper-level"


class VoiceLevels:
    """Each voice's gain on one engine: read from the cache, or measured (noise-free
    reference sentences through the engine) and cached, once per voice; `apply` levels a
    piece of that voice's audio. `enabled` False leaves audio as the model makes it."""

    def __init__(self, engine: Engine, enabled: bool = True, cache_dir: Path | None = None) -> None:
        self.engine, self.enabled = engine, enabled
        self.cache_dir = cache_dir or default_cache_dir()
        self._gains: dict[VoiceSpec, float] = {}

    def prepare(self, voice: LoadedVoice) -> float:
        """The voice's gain, measured now if neither this process nor the cache has it."""
        spec = voice.spec
        gain = self._gains.get(spec)
        if gain is None:
            gain = self._gains[spec] = self._load_or_measure(voice) if self.enabled else 1.0
        return gain

    def apply(self, voice: LoadedVoice, audio: np.ndarray) -> np.ndarray:
        gain = self.prepare(voice)
        return apply_gain(audio, gain) if gain != 1.0 else audio

    def _load_or_measure(self, voice: LoadedVoice) -> float:
        from voxpipe.stages.families.piper.engines.onnx_parts import cache_key

        spec = voice.spec
        try:
            path = self.cache_dir / f"{cache_key(spec.model_path, LEVEL_FORMAT)}.json"
        except OSError as exc:
            _LOG.warning("voice %r: cannot read its model for the level cache: %s", spec.name, exc)
            path = None
        cached = _read_gain(path) if path is not None else None
        if cached is not None:
            return cached
        gain = self._measure(voice)
        if path is not None:
            _write_gain(path, gain)
        return gain

    def _measure(self, voice: LoadedVoice) -> float:
        from voxpipe.stages.families.piper.item import SynthesisItem
        from voxpipe.stages.families.piper.phonemize import Phonemizer, PhonemizeError
        from voxpipe.stages.families.piper.spec import piper_settings

        spec = voice.spec
        length_scale = piper_settings(spec).length_scale
        try:
            phonemizer = Phonemizer(spec)
            items = [SynthesisItem(phonemizer.text_to_ids(text), 0.0, length_scale, 0.0) for text in REFERENCE_TEXTS]
            return peak_gain(self.engine.synthesize(voice, items))
        except (PhonemizeError, LevelError) as exc:
            _LOG.warning("voice %r: level not measured (%s); its audio is left as the model makes it",
                         spec.name, exc)
            return 1.0


def _read_gain(path: Path) -> float | None:
    try:
        gain = float(json.loads(path.read_text())["gain"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return gain if 0.0 < gain <= MAX_GAIN else None


def _write_gain(path: Path, gain: float) -> None:
    """Written whole or not at all: workers starting together may write the same file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"gain": gain, "format": LEVEL_FORMAT}))
        os.replace(tmp, path)
    except OSError as exc:
        _LOG.warning("cannot cache a voice's level in %s: %s", path.parent, exc)
