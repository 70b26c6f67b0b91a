"""How close one rendering of audio is to another: the figure every precision probe
(a Piper vocoder in bf16, GPT-SoVITS's renderer, an int8 voice) decides by."""
from __future__ import annotations

import numpy as np


def snr_db(reference: np.ndarray, other: np.ndarray, *, trim: bool = False) -> float:
    """Signal-to-noise ratio of `other` against `reference` in dB: inf when they are equal,
    -inf when the reference is silent and `other` is not. Lengths must match (a shifted
    signal's error says nothing about precision), unless `trim` compares their common
    start."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    out = np.asarray(other, dtype=np.float64).reshape(-1)
    if trim:
        n = min(ref.size, out.size)
        ref, out = ref[:n], out[:n]
    elif ref.size != out.size:
        raise ValueError(f"lengths differ: {ref.size} vs {out.size} samples")
    noise = float(np.sum((ref - out) ** 2))
    if noise == 0.0:
        return float("inf")
    signal = float(np.sum(ref ** 2))
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))
