"""The v3 vocoder: NVIDIA's BigVGAN v2 (the 24 kHz, 100-band, 256x model GPT-SoVITS
ships), read from its usual folder `models--nvidia--bigvgan_v2_24khz_100band_256x/` with
`config.json` and `bigvgan_generator.pt` ({"generator": state dict}, weight-norm pairs).

Inside the generator each residual convolution is preceded by an anti-aliased periodic
activation: upsample 2x with a Kaiser-windowed sinc filter, SnakeBeta
(x + sin^2(a x) / b, with a and b stored as logarithms when `snake_logscale`), low-pass and
downsample 2x with the same kind of filter. The filters are fixed; they are computed here
and must equal the ones stored in the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models.checkpoints import CheckpointError, fold_weight_norm, load_exact

FOLDER = "models--nvidia--bigvgan_v2_24khz_100band_256x"
FILTER_TAPS = 12


def kaiser_sinc(cutoff: float, half_width: float, taps: int) -> Tensor:
    """[1, 1, taps] low-pass filter (even length), normalized to unit sum."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False)
    time = torch.arange(-half, half) + 0.5 if taps % 2 == 0 else torch.arange(taps) - half
    taps_ = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps_ / taps_.sum()).view(1, 1, taps)


class _Up2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filter", kaiser_sinc(0.25, 0.3, FILTER_TAPS))
        self.pad = FILTER_TAPS // 2 - 1
        self.cut_left = self.pad * 2 + (FILTER_TAPS - 2) // 2
        self.cut_right = self.pad * 2 + (FILTER_TAPS - 2 + 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = 2 * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=2, groups=c)
        return x[..., self.cut_left:-self.cut_right]


class _LowPass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filter", kaiser_sinc(0.25, 0.3, FILTER_TAPS))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (FILTER_TAPS // 2 - 1, FILTER_TAPS // 2), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=2, groups=c)


class _Down2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lowpass = _LowPass()

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    def __init__(self, channels: int, logscale: bool, beta: bool = True) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        if beta:
            self.beta = nn.Parameter(torch.zeros(channels))
        self.logscale = logscale

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        beta = getattr(self, "beta", self.alpha)[None, :, None]
        if self.logscale:
            alpha, beta = torch.exp(alpha), torch.exp(beta)
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class AliasFreeActivation(nn.Module):
    """`Activation1d`: 2x up, activation, 2x down."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.upsample = _Up2()
        self.downsample = _Down2()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class AMPBlock(nn.Module):
    """Residual block: per dilation, act -> dilated conv -> act -> conv (type "1"); type
    "2" has only the dilated convolutions."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int], make_act, two_convs: bool) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                                     for d in dilations])
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, padding=_padding(kernel, 1))
                                     for _ in dilations] if two_convs else [])
        n = len(self.convs1) + len(self.convs2)
        self.activations = nn.ModuleList([AliasFreeActivation(make_act()) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        if not len(self.convs2):
            for conv, act in zip(self.convs1, self.activations):
                x = x + conv(act(x))
            return x
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x


@dataclass(frozen=True)
class BigVganConfig:
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    activation: str
    snake_logscale: bool
    use_tanh_at_final: bool
    use_bias_at_final: bool
    sampling_rate: int

    @classmethod
    def from_json(cls, h: dict[str, Any]) -> "BigVganConfig":
        if h.get("activation") not in ("snake", "snakebeta"):
            raise ValueError(f"unknown BigVGAN activation {h.get('activation')!r}")
        return cls(int(h["num_mels"]), tuple(h["upsample_rates"]), tuple(h["upsample_kernel_sizes"]),
                   int(h["upsample_initial_channel"]), str(h["resblock"]), tuple(h["resblock_kernel_sizes"]),
                   tuple(tuple(d) for d in h["resblock_dilation_sizes"]), str(h["activation"]),
                   bool(h.get("snake_logscale", True)), bool(h.get("use_tanh_at_final", True)),
                   bool(h.get("use_bias_at_final", True)), int(h["sampling_rate"]))

    @property
    def hop(self) -> int:
        return math.prod(self.upsample_rates)


class BigVGAN(nn.Module):
    """mel [B, num_mels, T] (log-mel, denormalized) -> audio [B, 1, T * hop]."""

    def __init__(self, cfg: BigVganConfig) -> None:
        super().__init__()
        self.cfg = cfg
        beta = cfg.activation == "snakebeta"
        self.conv_pre = nn.Conv1d(cfg.num_mels, cfg.upsample_initial_channel, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = cfg.upsample_initial_channel
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            ch = cfg.upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(ch * 2, ch, k, u, padding=(k - u) // 2)]))
            for ks, ds in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock(ch, ks, ds, lambda c=ch: SnakeBeta(c, cfg.snake_logscale, beta),
                                               cfg.resblock == "1"))
        self.activation_post = AliasFreeActivation(SnakeBeta(ch, cfg.snake_logscale, beta))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=cfg.use_bias_at_final)
        self.num_kernels = len(cfg.resblock_kernel_sizes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.cfg.use_tanh_at_final else torch.clamp(x, -1.0, 1.0)


def load_bigvgan(folder: Path) -> BigVGAN:
    """The vocoder from its folder; CheckpointError naming what is missing or wrong."""
    config_path, weights_path = folder / "config.json", folder / "bigvgan_generator.pt"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"v3 vocoder not found: expected {path}")
    try:
        cfg = BigVganConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        obj = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        state = fold_weight_norm(obj["generator"] if "generator" in obj else obj)
        model = BigVGAN(cfg)
        fixed = {k for k in model.state_dict() if k.endswith(".filter")}
        for key in fixed & set(state):
            if not torch.allclose(state[key], model.state_dict()[key], atol=1e-6):
                raise ValueError(f"{key} is not the anti-aliasing filter this vocoder expects")
        state.update({k: v for k, v in model.state_dict().items() if k in fixed})
        return load_exact(model, state, f"{FOLDER} vocoder")
    except (KeyError, ValueError, TypeError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{folder.name}: {exc}") from None
