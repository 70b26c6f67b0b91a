"""The v4 vocoder: a HiFi-GAN generator (upsampling 10, 6, 2, 2, 2 = 480x, so 100 mel
frames/s become 48 kHz audio) with a biased output convolution, read from
`gsv-v4-pretrained/vocoder.pth` (a plain state dict, weight norm already removed).
The channel width comes from the weights (512 in the released model)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from voxpipe.stages.families.gpt_sovits.models.checkpoints import CheckpointError, fold_weight_norm, load_exact
from voxpipe.stages.families.gpt_sovits.models.layers import Generator

FILE = "gsv-v4-pretrained/vocoder.pth"
UPSAMPLE_RATES = (10, 6, 2, 2, 2)
UPSAMPLE_KERNELS = (20, 12, 4, 4, 4)
RESBLOCK_KERNELS = (3, 7, 11)
RESBLOCK_DILATIONS = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
SAMPLE_RATE = 48000
HOP = 480


def v4_vocoder(mels: int = 100, channels: int = 512) -> Generator:
    gen = Generator(mels, "1", RESBLOCK_KERNELS, RESBLOCK_DILATIONS, UPSAMPLE_RATES, channels, UPSAMPLE_KERNELS, 0)
    out = gen.conv_post
    gen.conv_post = nn.Conv1d(out.in_channels, 1, 7, 1, padding=3, bias=True)
    return gen


def load_v4_vocoder(pretrained: Path) -> Generator:
    path = pretrained / FILE
    if not path.is_file():
        raise CheckpointError(f"v4 vocoder not found: expected {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = fold_weight_norm(state.get("weight", state) if isinstance(state.get("weight"), dict) else state)
        pre = state["conv_pre.weight"]
        return load_exact(v4_vocoder(int(pre.shape[1]), int(pre.shape[0])), state, "v4 vocoder")
    except (KeyError, ValueError, TypeError, RuntimeError, OSError, AttributeError) as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
