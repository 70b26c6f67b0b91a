"""Joining chunk audio: an equal-power crossfade where two chunks meet.

The joiner holds back the last `fade` samples of each chunk until the next one arrives,
so it can stream everything before them at once. Equal-power curves (cos/sin) keep the
loudness of uncorrelated signals constant through the overlap.
"""
from __future__ import annotations

import numpy as np


def equal_power_curves(length: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    return np.cos(t * np.pi / 2).astype(np.float32), np.sin(t * np.pi / 2).astype(np.float32)


class CrossfadeJoiner:
    def __init__(self, fade_samples: int) -> None:
        self.fade = max(0, int(fade_samples))
        self._held = np.zeros(0, dtype=np.float32)
        self._curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.length = 0  # samples of the joined output so far (returned or held)
        self.last_start = 0  # where the last pushed piece's first sample sits in the output

    def push(self, audio: np.ndarray, crossfade: bool, final: bool) -> np.ndarray:
        """Add the next piece; returns the samples that are now final.

        `crossfade` is True where `audio` starts a new chunk (a join to fade across) and
        False for a continuation window of the same chunk (joined exactly).
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        held = self._held
        if crossfade and len(held) and len(audio):
            overlap = min(len(held), len(audio))
            fade_out, fade_in = self._curve(overlap)
            mixed = held[len(held) - overlap:] * fade_out + audio[:overlap] * fade_in
            joined = np.concatenate([held[:len(held) - overlap], mixed, audio[overlap:]])
        else:
            overlap = 0
            joined = np.concatenate([held, audio])
        self.last_start = self.length - overlap
        self.length = self.last_start + len(audio)
        keep = 0 if final else min(self.fade, len(joined))
        self._held = joined[len(joined) - keep:].copy()
        return joined[:len(joined) - keep]

    def _curve(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        curve = self._curves.get(length)
        if curve is None:
            curve = self._curves[length] = equal_power_curves(length)
        return curve


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
