"""Log-mel spectrograms as GPT-SoVITS v3/v4 compute the reference prompt for the CFM.

The filterbank is the Slaney-style one (Slaney mel scale, area-normalized triangles) that
librosa builds by default, computed here in float64 and stored as float32 so no audio
library is needed. The STFT is uncentred after reflect-padding (n_fft - hop) / 2 on
each side; magnitudes get a 1e-8 floor inside the square root and the log a 1e-5 clamp.
The CFM works on the log-mel mapped from [-12, 2] to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

SPEC_MIN, SPEC_MAX = -12.0, 2.0


@dataclass(frozen=True)
class MelConfig:
    sampling_rate: int
    n_fft: int
    hop: int
    n_mels: int = 100

    @property
    def frames_per_second(self) -> float:
        return self.sampling_rate / self.hop


V3_MEL = MelConfig(24000, 1024, 256)  # 93.75 frames/s
V4_MEL = MelConfig(32000, 1280, 320)  # 100 frames/s


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log_part, linear)


@lru_cache(maxsize=8)
def mel_filterbank(sampling_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32 triangles on the Slaney mel scale, each of unit area."""
    fmax = sampling_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0, sampling_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(audio: Tensor, cfg: MelConfig) -> Tensor:
    """Audio [B, T] float32 -> log-mel [B, n_mels, frames]."""
    pad = (cfg.n_fft - cfg.hop) // 2
    y = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(cfg.n_fft, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(y, cfg.n_fft, hop_length=cfg.hop, win_length=cfg.n_fft, window=window, center=False,
                      normalized=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-8)
    basis = torch.from_numpy(mel_filterbank(cfg.sampling_rate, cfg.n_fft, cfg.n_mels)).to(audio.device, audio.dtype)
    return torch.log(torch.clamp(basis @ magnitude, min=1e-5))


def normalize(mel: Tensor) -> Tensor:
    return (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2 - 1


def denormalize(mel: Tensor) -> Tensor:
    return (mel + 1) / 2 * (SPEC_MAX - SPEC_MIN) + SPEC_MIN
