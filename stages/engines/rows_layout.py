"""1-D convolutions run as 2-D ones on [B, C, 1, T] in channels-last order: on CPU,
oneDNN's channels-last kernels are far faster than its 1-D path for the long, narrow
signals of a HiFi-GAN vocoder (both families' vocoders use this), and onnxruntime's
blocked convolutions take 2-D convolutions only."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def conv_rows(x: Tensor, conv: nn.Conv1d | nn.ConvTranspose1d) -> Tensor:
    """`conv` on `x` [B, C, T] as it is, or on `x` [B, C, 1, T] as the 2-D convolution with
    the same taps."""
    if x.dim() == 3:
        return conv(x)
    weight = conv.weight.unsqueeze(2)
    if isinstance(conv, nn.ConvTranspose1d):
        return F.conv_transpose2d(x, weight, conv.bias, stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                                  output_padding=(0, conv.output_padding[0]))
    return F.conv2d(x, weight, conv.bias, stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),  # type: ignore[index]
                    dilation=(1, conv.dilation[0]))


def as_rows(x: Tensor) -> Tensor:
    """[B, C, T] -> [B, C, 1, T], channels-last."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def channels_last_weights(module: nn.Module) -> None:
    """Store every conv weight [O, I, k] under `module` as a view of a channels-last
    [O, I, 1, k] tensor, so the 2-D convolutions read it without a reorder per call;
    loading a state dict copies into these tensors and keeps their layout."""
    for conv in module.modules():
        if isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d)):
            conv.weight.data = conv.weight.data.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)


def split_halves(x: Tensor, margin: int) -> Tensor:
    """[B, C, 1, L] -> [B, C, 2, W]: the signal's first and second half (the first takes the
    odd sample) as two rows, each with up to `margin` samples of the other beside it
    (W = min(L, ceil(L/2) + margin), both rows the whole signal where it is that short).
    Negative starts, not computed ones, so an ONNX export keeps L dynamic."""
    half = (x.shape[-1] + 1) // 2
    return torch.cat([x[..., :half + margin], x[..., -(half + margin):]], dim=2)


def join_halves(x: Tensor, length: int) -> Tensor:
    """The inverse of split_halves: [B, C, 2, W] -> [B, C, 1, length], each row's margin
    (where the cut's zero padding reached) dropped."""
    half = (length + 1) // 2
    return torch.cat([x[:, :, :1, :half], x[:, :, 1:, -(length - half):]], dim=3)
