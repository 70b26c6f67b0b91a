"""A voice's output level: one gain per voice, measured when it loads.

Piper scales every sentence so that its peak reaches full scale; Piper voices' raw output
is several dB quieter than that. Scaling each chunk by its own peak would make the level
jump at the joins of a request's chunks (and cannot be done while a chunk streams), so a
voice gets one gain instead: the one that gives a set of reference sentences, together,
the level Piper's per-sentence scaling gives them. They are synthesized without noise, so
every worker measures the same gain. Peaks
that the gain pushes past full scale are rounded off by a soft limiter that acts on each
sample alone, so windowed and whole decodes stay identical.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

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


def measure_gain(synthesize: Callable[[str], np.ndarray], texts: Sequence[str] = REFERENCE_TEXTS) -> float:
    """The voice's gain from its (noise-free) audio of `texts`."""
    return peak_gain([synthesize(text) for text in texts])


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
