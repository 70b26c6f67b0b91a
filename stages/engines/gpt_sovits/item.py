"""One GPT-SoVITS chunk as the engine takes it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GsvItem:
    phoneme_ids: np.ndarray  # int64 GPT-SoVITS phone ids, the language runs concatenated
    noise_scale: float
    length_scale: float  # 1 / speed
    seed: int | None = None
    # language runs: (lang, norm_text, n_phones, word2ph); a Mandarin run's text and phones
    # per character align its BERT features
    text_segments: tuple[tuple[str, str, int, tuple[int, ...]], ...] = ()
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    sample_steps: int | None = None  # v3/v4: CFM steps (None: the voice's default)
