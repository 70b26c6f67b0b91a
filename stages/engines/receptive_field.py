"""How far a HiFi-GAN generator sees: the latent frames on either side of a frame that
can change its audio. Both families' vocoders (VITS's and GPT-SoVITS's SoVITS decoder)
are such stacks of convolutions, so rendering a slice of a latent with this many frames
of margin on each side gives the slice's audio exactly as a whole rendering would."""
from __future__ import annotations

import math

from torch import nn


def _reach(conv: nn.Conv1d) -> int:
    """One-sided reach of a stride-1 'same' conv, in its own samples."""
    return conv.dilation[0] * (conv.kernel_size[0] - 1) - conv.padding[0]  # type: ignore[operator]


def _block_reach(block: nn.Module) -> int:
    """Reach of one residual block: its convolutions run one after another."""
    convs = [*getattr(block, "convs1", []), *getattr(block, "convs2", [])] or list(getattr(block, "convs", []))
    if not convs:
        raise TypeError(f"{type(block).__name__} is not a HiFi-GAN residual block")
    return sum(_reach(c) for c in convs)


def receptive_radius(dec: nn.Module) -> int:
    """Latent frames either side that can influence a frame's audio (rounded up). `dec`
    has conv_pre, ups (transposed convs), resblocks (num_kernels per upsampling stage)
    and conv_post, as HiFi-GAN's generator does."""
    scale = 1  # output samples per latent frame at the current layer
    reach = _reach(dec.conv_pre) / scale
    n = dec.num_kernels
    for i, up in enumerate(dec.ups):
        k, u, p = up.kernel_size[0], up.stride[0], up.padding[0]
        # Output t reads inputs j with 0 <= t + p - j*u < k: up to (k-1-p)/u back, p/u ahead.
        reach += max(k - 1 - p, p) / u / scale
        scale *= u
        reach += max(_block_reach(block) for block in dec.resblocks[i * n:(i + 1) * n]) / scale
    reach += _reach(dec.conv_post) / scale
    return math.ceil(reach) + 1  # +1: window edges fall between the samples of a frame


def tail_reach(dec: nn.Module) -> int:
    """Output samples either side that reach an output sample through the generator's last
    stage after its upsampling (its residual blocks, then conv_post)."""
    n = dec.num_kernels
    last = len(dec.ups) - 1
    return max(_block_reach(block) for block in dec.resblocks[last * n:(last + 1) * n]) + _reach(dec.conv_post)


def flow_radius(flow: nn.Module) -> int:
    """Latent frames either side that can change a frame of a VITS flow's output: each
    coupling layer's WaveNet stack reads its convolutions' reach one after another, and
    the couplings run one after another (1x1 convolutions and flips reach nothing)."""
    reach = 0
    for coupling in flow.flows.values():
        reach += sum(_reach(conv) for conv in coupling.enc.in_layers)
    return int(reach)
