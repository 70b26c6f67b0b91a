"""Streaming vocoder: decode a long latent window by window, so the first audio of a long
sentence is ready after one window instead of after the whole sentence.

The generator is a stack of convolutions, so each output sample depends only on latent
frames within a fixed radius (its receptive field). Decoding each window together with
that many context frames on both sides and keeping the window's own samples reproduces
the full decode; the utterance edges see the same zero padding as a full decode.
"""
from __future__ import annotations

import math
from typing import Iterator

from torch import Tensor, nn

from voxpipe.stages.engines.vits.model import Generator, ResBlock1, ResBlock2, VitsModel


def _reach(conv: nn.Conv1d) -> int:
    """One-sided reach of a stride-1 'same' conv, in its own samples."""
    return conv.dilation[0] * (conv.kernel_size[0] - 1) - conv.padding[0]  # type: ignore[operator]


def receptive_radius(dec: Generator) -> int:
    """Latent frames either side that can influence a frame's audio (rounded up)."""
    scale = 1  # output samples per latent frame at the current layer
    reach = _reach(dec.conv_pre) / scale
    n = dec.num_kernels
    for i, up in enumerate(dec.ups):
        k, u, p = up.kernel_size[0], up.stride[0], up.padding[0]  # type: ignore[index]
        # Output t reads inputs j with 0 <= t + p - j*u < k: up to (k-1-p)/u back, p/u ahead.
        reach += max(k - 1 - p, p) / u / scale
        scale *= u
        widest = 0
        for block in dec.resblocks[i * n:(i + 1) * n]:
            if isinstance(block, ResBlock1):
                total = sum(_reach(c) for c in block.convs1) + sum(_reach(c) for c in block.convs2)
            else:
                assert isinstance(block, ResBlock2)
                total = sum(_reach(c) for c in block.convs)
            widest = max(widest, total)
        reach += widest / scale
    reach += _reach(dec.conv_post) / scale
    return math.ceil(reach) + 1  # +1: window edges fall between the samples of a frame


def decode_windows(model: VitsModel, z: Tensor, window_frames: int, context_frames: int | None = None,
                   sid: Tensor | None = None) -> Iterator[Tensor]:
    """Yield audio pieces [samples] of one latent z [1, C, frames], window by window.

    Joined, the pieces equal `model.vocode(z)` up to float rounding.
    """
    if z.shape[0] != 1:
        raise ValueError("decode_windows takes one item at a time")
    if window_frames < 1:
        raise ValueError("window_frames must be positive")
    context = receptive_radius(model.dec) if context_frames is None else context_frames
    hop = model.hop_length
    frames = z.shape[2]
    for start in range(0, frames, window_frames):
        end = min(start + window_frames, frames)
        lo, hi = max(0, start - context), min(frames, end + context)
        audio = model.vocode(z[:, :, lo:hi], sid=sid)[0]
        yield audio[(start - lo) * hop:(end - lo) * hop]
