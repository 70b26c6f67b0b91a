"""One Piper/VITS chunk as its engines take it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SynthesisItem:
    """One Piper/VITS chunk to synthesize: phoneme ids plus the request's VITS settings."""

    phoneme_ids: np.ndarray  # int64, 1-D, already wrapped with BOS/EOS/pad ids
    noise_scale: float
    length_scale: float
    noise_w: float
    speaker_id: int = 0
    seed: int | None = None
    # The request is this one chunk: no other chunk of its own runs beside it on another
    # worker, so a call on several threads may keep them spinning (onnx_engine.py).
    whole_request: bool = False
    # The first of several chunks: its first audio is the request's, so it renders for the
    # soonest first window rather than the soonest end (onnx_engine.py).
    leads_siblings: bool = False
