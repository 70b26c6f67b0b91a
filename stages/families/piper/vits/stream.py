"""Streaming vocoder: decode a long latent window by window, so the first audio of a long
sentence is ready after one window instead of after the whole sentence.

The generator is a stack of convolutions, so each output sample depends only on latent
frames within a fixed radius (its receptive field). Decoding each window together with
that many context frames on both sides and keeping the window's own samples reproduces
the full decode; the utterance edges see the same zero padding as a full decode.
"""
from __future__ import annotations

from typing import Iterator

from torch import Tensor

from voxpipe.stages.engines.receptive_field import receptive_radius
from voxpipe.stages.families.piper.engines.windows import GROWTH, stream_windows
from voxpipe.stages.families.piper.vits.model import VitsModel


def decode_windows(model: VitsModel, z: Tensor, window_frames: int, context_frames: int | None = None,
                   sid: Tensor | None = None, growth: int = GROWTH) -> Iterator[Tensor]:
    """Yield audio pieces [samples] of one latent z [1, C, frames], window by window: the
    first `window_frames` wide, each next `growth` times wider (the plan in
    stages/families/piper/engines/windows.py; growth 1: equal windows).

    Joined, the pieces equal `model.vocode(z)` up to float rounding.
    """
    if z.shape[0] != 1:
        raise ValueError("decode_windows takes one item at a time")
    if window_frames < 1:
        raise ValueError("window_frames must be positive")
    context = receptive_radius(model.dec) if context_frames is None else context_frames
    hop = model.hop_length
    frames = z.shape[2]
    for start, end in stream_windows(frames, window_frames, growth):
        lo, hi = max(0, start - context), min(frames, end + context)
        audio = model.vocode(z[:, :, lo:hi], sid=sid)[0]
        yield audio[(start - lo) * hop:(end - lo) * hop]
