"""The noise a Piper/VITS chunk is rendered with, as a pure function of its seed.

VITS draws two noises: the stochastic duration predictor's [2, phonemes] and the prior's
[channels, frames]. Every engine uses these arrays (onnxruntime's split graphs take them
as inputs; torch and TensorRT add them in torch), so one seed renders the same audio on
any engine, alone or in a batch, whole or in streamed windows, and a chunk rendered again
after a failure continues exactly where the first rendering stopped.

Each noise has its own stream of the seed, and the prior's is drawn frame by frame: its
first n frames do not depend on how many are drawn, so an engine may draw more frames
than the durations turn out to need before it knows them.
"""
from __future__ import annotations

import secrets

import numpy as np

DURATION_STREAM, LATENT_STREAM = 0, 1


def concrete_seed(seed: int | None) -> int:
    """The item's seed, or a fresh random one (probes and direct engine calls name none;
    the daemon's chunks always carry one)."""
    return secrets.randbits(63) if seed is None else int(seed)


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed % 2**64, stream])))


def duration_noise(seed: int, phonemes: int) -> np.ndarray:
    """float32 [2, phonemes]: the duration predictor's noise (scaled by noise_w)."""
    return _generator(seed, DURATION_STREAM).standard_normal((2, phonemes), dtype=np.float32)


def latent_noise(seed: int, channels: int, frames: int) -> np.ndarray:
    """float32 [channels, frames]: the prior's noise (scaled by noise_scale)."""
    drawn = _generator(seed, LATENT_STREAM).standard_normal((frames, channels), dtype=np.float32)
    return np.ascontiguousarray(drawn.T)
