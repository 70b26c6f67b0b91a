"""Piper's VITS for inference only, split into an acoustic part and a vocoder.

Acoustic part: phoneme ids -> text encoder -> durations -> expanded prior -> reverse flow
-> latent z [B, C, frames] plus each item's length in frames. Vocoder: the HiFi-GAN
generator `dec`, z -> audio [B, frames * hop].

Parameter names follow Piper's checkpoints (`enc_p.*`, `dp.*`, `flow.*`, `dec.*`, `emb_g`)
so the weights stored in a Piper .onnx load with a strict state dict. Modules that only
matter for training (posterior encoder, the duration predictor's posterior flows, its
first spline flow that inference drops) are left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.engines.receptive_field import tail_reach
from voxpipe.stages.engines.rows_layout import as_rows, channels_last_weights, conv_rows, join_halves, split_halves
from voxpipe.stages.families.piper import noise

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class VitsConfig:
    """Hyperparameters of one voice; `load.infer_config` reads them off the weights."""

    n_vocab: int
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    window_size: int = 4
    heads_share: bool = True
    use_sdp: bool = True
    dp_filter_channels: int = 192
    dp_kernel_size: int = 3
    dp_n_layers: int = 3  # DDSConv depth (SDP) or unused (plain predictor)
    dp_flow_layers: int = 3  # DDSConv depth inside each spline flow
    dp_n_flows: int = 4
    dp_num_bins: int = 10
    dp_tail_bound: float = 5.0
    flow_hidden_channels: int = 192
    flow_kernel_size: int = 5
    flow_dilation_rate: int = 1
    flow_n_layers: int = 4
    flow_n_flows: int = 4
    resblock: str = "2"
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_initial_channel: int = 256
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
    pre_kernel_size: int = 7
    post_kernel_size: int = 7
    post_bias: bool = False
    n_speakers: int = 1
    gin_channels: int = 0

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


def sequence_mask(lengths: Tensor, max_length: int | Tensor) -> Tensor:
    """[B] lengths -> [B, 1, max_length] float mask."""
    positions = torch.arange(max_length, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).unsqueeze(1).float()


def bucket_length(n: int, steps_per_octave: int = 8, minimum: int = 16) -> int:
    """Round n up onto a coarse grid: steps of 8, or 1/steps_per_octave of n's octave.

    oneDNN builds a kernel per input shape; padding lengths onto a grid lets a serving
    process reuse them instead of building a fresh set for every sentence.
    """
    if n <= minimum:
        return minimum
    step = max(8, (1 << (n.bit_length() - 1)) // steps_per_octave)
    return -(-n // step) * step


def _same_conv(cin: int, cout: int, kernel: int, dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, kernel, dilation=dilation, groups=groups, bias=bias,
                     padding=(kernel * dilation - dilation) // 2)


class ChannelNorm(nn.Module):
    """Layer norm over the channel axis of [B, C, T]."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.time_major(x.transpose(1, 2)).transpose(1, 2)

    def time_major(self, x: Tensor) -> Tensor:
        """The same norm on [B, T, C]."""
        return F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)


def tconv(x: Tensor, conv: nn.Conv1d, pads: tuple[int, int] | None = None) -> Tensor:
    """`conv` applied to time-major x [B, T, C] -> [B, T, C_out].

    The encoder and the flow run time-major: a convolution then is one GEMM over unfolded
    windows (1x1: a plain linear layer). On CPU that is as fast as oneDNN's convolution
    and, unlike it, builds no new kernel for each new sentence length. Layer norms need
    no transposes either. `pads` overrides the module's own (symmetric) padding. ONNX
    export calls the module itself so the graph keeps Piper's Conv nodes.
    """
    k, d = conv.kernel_size[0], conv.dilation[0]
    if torch.onnx.is_in_onnx_export():
        x = x.transpose(1, 2)
        return conv(x if pads is None else F.pad(x, pads)).transpose(1, 2)
    left, right = pads if pads is not None else (int(conv.padding[0]),) * 2  # type: ignore[index]
    weight = conv.weight
    if k == 1:
        return F.linear(x, weight.reshape(weight.shape[0], -1), conv.bias)
    if left or right:
        x = F.pad(x, (0, 0, left, right))
    b, t, c = x.shape
    cols = x.unfold(1, d * (k - 1) + 1, 1)  # [B, T_out, C, span]
    if d > 1:
        cols = cols[..., ::d]
    cols = cols.reshape(b, cols.shape[1], c * k)
    return F.linear(cols, weight.reshape(weight.shape[0], c * k), conv.bias)


# --------------------------------------------------------------------------- text encoder


def _band_to_full(rel: Tensor) -> Tensor:
    """[B, H, T, 2w+1] logits by offset (j - i + w) -> [B, H, T, T] logits by key j.

    Skewing through a flat reshape: rows padded to T+2w+1 and re-read with stride T+2w
    shift row i right by i, so offset k lands at column i + k; zeros fill the rest.
    """
    b, h, t, k = rel.shape
    w = (k - 1) // 2
    flat = F.pad(rel, (0, t)).reshape(b, h, t * (t + k))[:, :, : t * (t + 2 * w)]
    return flat.view(b, h, t, t + 2 * w)[:, :, :, w : w + t]


def _full_to_band(p: Tensor, w: int) -> Tensor:
    """[B, H, T, T] weights by key j -> [B, H, T, 2w+1] weights by offset (j - i + w)."""
    b, h, t, _ = p.shape
    m = t + 2 * w + 1
    flat = F.pad(F.pad(p, (w, w + 1)).reshape(b, h, t * m), (0, t))
    return flat.view(b, h, t, m + 1)[:, :, :, : 2 * w + 1]


class RelativeSelfAttention(nn.Module):
    """Multi-head self-attention with windowed relative-position keys and values."""

    def __init__(self, channels: int, n_heads: int, window_size: int, heads_share: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        rel_heads = 1 if heads_share else n_heads
        scale = self.k_channels ** -0.5
        self.emb_rel_k = nn.Parameter(torch.randn(rel_heads, 2 * window_size + 1, self.k_channels) * scale)
        self.emb_rel_v = nn.Parameter(torch.randn(rel_heads, 2 * window_size + 1, self.k_channels) * scale)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """x [B, T, C] time-major; key_mask [B, 1, T, T]."""
        b, t, c = x.shape
        h, d = self.n_heads, self.k_channels
        q = tconv(x, self.conv_q).view(b, t, h, d).transpose(1, 2) / math.sqrt(d)
        k = tconv(x, self.conv_k).view(b, t, h, d).permute(0, 2, 3, 1)
        v = tconv(x, self.conv_v).view(b, t, h, d).transpose(1, 2)
        scores = torch.matmul(q, k)
        scores = scores + _band_to_full(torch.matmul(q, self.emb_rel_k.transpose(1, 2).unsqueeze(0)))
        scores = scores.masked_fill(key_mask == 0, -1e4)
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v)
        out = out + torch.matmul(_full_to_band(weights, self.window_size), self.emb_rel_v.unsqueeze(0))
        return tconv(out.transpose(1, 2).reshape(b, t, c), self.conv_o)


class FeedForward(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Time-major x [B, T, C], mask [B, T, 1]."""
        x = torch.relu(tconv(x * mask, self.conv_1, self.pad))
        return tconv(x * mask, self.conv_2, self.pad) * mask


class Encoder(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        hc = cfg.hidden_channels
        n = cfg.n_layers
        self.attn_layers = nn.ModuleList(
            RelativeSelfAttention(hc, cfg.n_heads, cfg.window_size, cfg.heads_share) for _ in range(n))
        self.norm_layers_1 = nn.ModuleList(ChannelNorm(hc) for _ in range(n))
        self.ffn_layers = nn.ModuleList(FeedForward(hc, cfg.filter_channels, cfg.kernel_size) for _ in range(n))
        self.norm_layers_2 = nn.ModuleList(ChannelNorm(hc) for _ in range(n))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Time-major x [B, T, C], mask [B, T, 1]."""
        row = mask.transpose(1, 2)  # [B, 1, T]
        key_mask = row.unsqueeze(2) * row.unsqueeze(-1)
        x = x * mask
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm_1.time_major(x + attn(x, key_mask))
            x = norm_2.time_major(x + ffn(x, mask))
        return x * mask


class TextEncoder(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.out_channels = cfg.inter_channels
        self.scale = math.sqrt(cfg.hidden_channels)
        self.emb = nn.Embedding(cfg.n_vocab, cfg.hidden_channels)
        self.encoder = Encoder(cfg)
        self.proj = nn.Conv1d(cfg.hidden_channels, cfg.inter_channels * 2, 1)

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ids [B, T] -> hidden x, prior mean m, log-std logs (all [B, C, T]) and mask [B, 1, T]."""
        x = self.emb(ids) * self.scale  # [B, T, H]
        mask = sequence_mask(lengths, ids.shape[1]).to(x.dtype)
        mask_t = mask.transpose(1, 2)
        x = self.encoder(x * mask_t, mask_t)
        stats = (tconv(x, self.proj) * mask_t).transpose(1, 2)
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return x.transpose(1, 2), m, logs, mask


# --------------------------------------------------------------------------- durations


class DDSConv(nn.Module):
    """Depthwise-separable convolutions with growing dilation (kernel ** layer)."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList(
            _same_conv(channels, channels, kernel_size, dilation=kernel_size ** i, groups=channels)
            for i in range(n_layers))
        self.convs_1x1 = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(n_layers))
        self.norms_1 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))
        self.norms_2 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor, g: Tensor | None = None) -> Tensor:
        if g is not None:
            x = x + g
        for sep, norm_1, pointwise, norm_2 in zip(self.convs_sep, self.norms_1, self.convs_1x1, self.norms_2):
            y = F.gelu(norm_1(sep(x * mask)))
            y = F.gelu(norm_2(pointwise(y)))
            x = x + y
        return x * mask


def _spline_inverse(y: Tensor, widths_u: Tensor, heights_u: Tensor, derivs_u: Tensor, bound: float,
                    min_size: float = 1e-3, min_derivative: float = 1e-3) -> Tensor:
    """Inverse of a monotonic rational-quadratic spline on [-bound, bound], identity outside.

    Every element is evaluated (bins clamped) and `where` keeps the identity tails, which
    gives the same per-element arithmetic as masking the inside elements out first.
    """
    bins = widths_u.shape[-1]
    # The outermost knots get derivative 1 so the spline joins the linear tails smoothly.
    edge = math.log(math.exp(1 - min_derivative) - 1)
    derivs = min_derivative + F.softplus(F.pad(derivs_u, (1, 1), value=edge))

    def knots(unnormalized: Tensor) -> tuple[Tensor, Tensor]:
        sizes = min_size + (1 - min_size * bins) * torch.softmax(unnormalized, dim=-1)
        cum = (2 * bound) * F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) + (-bound)
        ends = torch.full_like(cum[..., :1], bound)
        cum = torch.cat([-ends, cum[..., 1:-1], ends], dim=-1)
        return cum, cum[..., 1:] - cum[..., :-1]

    cum_w, widths = knots(widths_u)
    cum_h, heights = knots(heights_u)
    index = ((y.unsqueeze(-1) >= cum_h).sum(-1) - 1).clamp(0, bins - 1).unsqueeze(-1)

    def pick(values: Tensor) -> Tensor:
        return values.gather(-1, index).squeeze(-1)

    x_lo, width = pick(cum_w), pick(widths)
    y_lo, height = pick(cum_h), pick(heights)
    delta = pick(heights / widths)
    d_lo, d_hi = pick(derivs), pick(derivs[..., 1:])

    dy = y - y_lo
    curvature = d_lo + d_hi - 2 * delta
    a = dy * curvature + height * (delta - d_lo)
    b = height * d_lo - dy * curvature
    c = -delta * dy
    disc = b.pow(2) - 4 * a * c
    theta = (2 * c) / (-b - torch.sqrt(disc))
    x = theta * width + x_lo
    inside = (y >= -bound) & (y <= bound)
    return torch.where(inside, x, y)


class ConvFlow(nn.Module):
    """Spline coupling flow of the stochastic duration predictor (reverse direction only)."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, n_layers: int,
                 num_bins: int, tail_bound: float) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.scale = math.sqrt(filter_channels)
        self.pre = nn.Conv1d(self.half_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers)
        self.proj = nn.Conv1d(filter_channels, self.half_channels * (num_bins * 3 - 1), 1)

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        h = self.proj(self.convs(self.pre(x0), mask, g=g)) * mask
        b, c, t = x0.shape
        h = h.reshape(b, c, -1, t).permute(0, 1, 3, 2)
        nb = self.num_bins
        x1 = _spline_inverse(x1, h[..., :nb] / self.scale, h[..., nb:2 * nb] / self.scale, h[..., 2 * nb:],
                             self.tail_bound)
        return torch.cat([x0, x1], dim=1) * mask


class ElementwiseAffine(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return (x - self.m) * torch.exp(-self.logs) * mask


class StochasticDurationPredictor(nn.Module):
    """Log-durations from noise through the reversed flows, conditioned on the text."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        fc, ks = cfg.dp_filter_channels, cfg.dp_kernel_size
        self.pre = nn.Conv1d(cfg.hidden_channels, fc, 1)
        self.proj = nn.Conv1d(fc, fc, 1)
        self.convs = DDSConv(fc, ks, cfg.dp_n_layers)
        if cfg.gin_channels:
            self.cond = nn.Conv1d(cfg.gin_channels, fc, 1)
        # Training-time indices: 0 affine, odd spline flows, even flips. Inference skips
        # flow 1, so only these carry weights.
        flows: dict[str, nn.Module] = {"0": ElementwiseAffine(2)}
        for i in range(2, cfg.dp_n_flows + 1):
            flows[str(2 * i - 1)] = ConvFlow(2, fc, ks, cfg.dp_flow_layers, cfg.dp_num_bins, cfg.dp_tail_bound)
        self.flows = nn.ModuleDict(flows)
        self.order = sorted(flows, key=int, reverse=True)

    def forward(self, x: Tensor, mask: Tensor, noise: Tensor, g: Tensor | None = None) -> Tensor:
        x = self.pre(x)
        if g is not None:
            x = x + self.cond(g)
        x = self.proj(self.convs(x, mask)) * mask
        z = noise
        for key in self.order:
            flow = self.flows[key]
            if isinstance(flow, ElementwiseAffine):
                z = torch.flip(z, [1])  # the flip that preceded flow 1 in training order
                z = flow(z, mask)
            else:
                z = flow(torch.flip(z, [1]), mask, g=x)
        return z[:, :1]


class DurationPredictor(nn.Module):
    """Plain convolutional log-duration predictor (voices trained without SDP)."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        fc, ks = cfg.dp_filter_channels, cfg.dp_kernel_size
        self.conv_1 = nn.Conv1d(cfg.hidden_channels, fc, ks, padding=ks // 2)
        self.norm_1 = ChannelNorm(fc)
        self.conv_2 = nn.Conv1d(fc, fc, ks, padding=ks // 2)
        self.norm_2 = ChannelNorm(fc)
        self.proj = nn.Conv1d(fc, 1, 1)
        if cfg.gin_channels:
            self.cond = nn.Conv1d(cfg.gin_channels, cfg.hidden_channels, 1)

    def forward(self, x: Tensor, mask: Tensor, noise: Tensor | None = None, g: Tensor | None = None) -> Tensor:
        if g is not None:
            x = x + self.cond(g)
        x = self.norm_1(torch.relu(self.conv_1(x * mask)))
        x = self.norm_2(torch.relu(self.conv_2(x * mask)))
        return self.proj(x * mask) * mask


# --------------------------------------------------------------------------- flow


class WN(nn.Module):
    """Gated dilated convolution stack (WaveNet-style) with optional speaker conditioning."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden = hidden
        if gin_channels:
            self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            _same_conv(hidden, 2 * hidden, kernel_size, dilation=dilation_rate ** i) for i in range(n_layers))
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor, g: Tensor | None = None) -> Tensor:
        """Time-major x [B, T, C], mask [B, T, 1], g [B, 1, gin]."""
        h = self.hidden
        cond = tconv(g, self.cond_layer) if g is not None else None
        out: Tensor | None = None
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = tconv(x, in_layer)
            if cond is not None:
                a = a + cond[..., 2 * h * i : 2 * h * (i + 1)]
            acts = torch.tanh(a[..., :h]) * torch.sigmoid(a[..., h:])
            rs = tconv(acts, res_skip)
            skip = rs if i == last else rs[..., h:]
            if i < last:
                x = (x + rs[..., :h]) * mask
            out = skip if out is None else out + skip
        assert out is not None
        return out * mask


class CouplingLayer(nn.Module):
    """Mean-only affine coupling, reverse direction, time-major."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.half_channels = cfg.inter_channels // 2
        hc = cfg.flow_hidden_channels
        self.pre = nn.Conv1d(self.half_channels, hc, 1)
        self.enc = WN(hc, cfg.flow_kernel_size, cfg.flow_dilation_rate, cfg.flow_n_layers, cfg.gin_channels)
        self.post = nn.Conv1d(hc, self.half_channels, 1)

    def forward(self, x: Tensor, mask: Tensor, g: Tensor | None = None) -> Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=-1)
        h = self.enc(tconv(x0, self.pre) * mask, mask, g=g)
        m = tconv(h, self.post) * mask
        return torch.cat([x0, (x1 - m) * mask], dim=-1)


class ResidualCouplingBlock(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        # Training order interleaves couplings (even) with flips (odd).
        self.flows = nn.ModuleDict({str(2 * i): CouplingLayer(cfg) for i in range(cfg.flow_n_flows)})

    def forward(self, x: Tensor, mask: Tensor, g: Tensor | None = None) -> Tensor:
        """x [B, C, T], mask [B, 1, T], g [B, gin, 1] -> x [B, C, T]."""
        x, mask = x.transpose(1, 2), mask.transpose(1, 2)
        g_t = None if g is None else g.transpose(1, 2)
        for key in reversed(list(self.flows.keys())):
            x = self.flows[key](torch.flip(x, [2]), mask, g=g_t)
        return x.transpose(1, 2)


# --------------------------------------------------------------------------- vocoder
#
# The generator runs its 1-D convolutions as 2-D ones on [B, C, 1, T] tensors in
# channels-last layout (stages/engines/rows_layout.py): oneDNN's NHWC kernels are several
# times faster on CPU than its NCW path for these long, narrow signals.
# `channels_last_weights` stores the weights in the matching layout once so no
# convolution reorders them. ONNX export takes the plain 1-D path so the graph keeps
# Piper's Conv nodes and parameter names (the 2-D vocoder graph is exported on request).


def _mask_(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero `x` past each item's end, in place (callers pass freshly computed tensors)."""
    return x if mask is None else x.mul_(mask)


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_same_conv(channels, channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_same_conv(channels, channels, kernel_size, 1) for _ in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None, act: Tensor | None = None) -> Tensor:
        """`act` may carry the masked leaky_relu(x), shared by the blocks that read the same x."""
        for c1, c2 in zip(self.convs1, self.convs2):
            a = act if act is not None else _mask_(F.leaky_relu(x, LRELU_SLOPE), mask)
            act = None
            y = _mask_(F.leaky_relu_(conv_rows(a, c1), LRELU_SLOPE), mask)
            y = conv_rows(y, c2)
            y += x  # fresh buffer: in place saves an allocation on long signals
            x = y
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_same_conv(channels, channels, kernel_size, d) for d in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None, act: Tensor | None = None) -> Tensor:
        """`act` may carry the masked leaky_relu(x), shared by the blocks that read the same x."""
        for conv in self.convs:
            a = act if act is not None else _mask_(F.leaky_relu(x, LRELU_SLOPE), mask)
            act = None
            y = conv_rows(a, conv)
            y += x
            x = y
        return x


class Generator(nn.Module):
    """HiFi-GAN generator: latent frames -> waveform, hop = product of upsample rates.

    With `lengths`, every convolution input is zeroed past each item's end, so a padded
    batch decodes each item exactly as it would decode alone.
    """

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        ch = cfg.upsample_initial_channel
        self.rates = tuple(cfg.upsample_rates)
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = _same_conv(cfg.inter_channels, ch, cfg.pre_kernel_size)
        if cfg.gin_channels:
            self.cond = nn.Conv1d(cfg.gin_channels, ch, 1)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList(
            block(ch // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = _same_conv(ch // 2 ** len(self.ups), 1, cfg.post_kernel_size, bias=cfg.post_bias)

    def channels_last_weights(self) -> "Generator":
        """Re-store each conv weight as a view of a channels-last [O, I, 1, k] tensor."""
        channels_last_weights(self)
        return self

    def forward(self, z: Tensor, g: Tensor | None = None, lengths: Tensor | None = None,
                rows: bool | None = None, halves: bool = False) -> Tensor:
        """z [B, C, frames] -> audio [B, 1, frames * hop]. Inside, each item is a row of a 2-D
        convolution ([B, C, 1, samples]): faster on CPU in torch and in onnxruntime (whose
        blocked-layout convolutions take 2-D ones only). `rows` None: 1-D in ONNX exports
        (the graphs TensorRT and the padded batch take), 2-D otherwise.

        `halves` (2-D, no `lengths`): the last stage runs on each item's two halves as two
        rows, each with the margin of the other that reaches it, so the audio is the same.
        onnxruntime's blocked convolutions share a call's work among threads by rows and
        by sets of 32 output channels, and the last stage has 32 channels: as one row it
        runs on one thread whatever the session has, and it is a third of the work."""
        flat = torch.onnx.is_in_onnx_export() if rows is None else not rows
        masks: list[Tensor | None] = [None] * (len(self.ups) + 1)
        if lengths is not None:
            masks = self._masks(lengths, z.shape[2], flat)
        x = z if flat else as_rows(z)
        x = conv_rows(x if masks[0] is None else x * masks[0], self.conv_pre)
        if g is not None:
            x = x + (self.cond(g) if flat else self.cond(g).unsqueeze(2))
        n = self.num_kernels
        halves = halves and not flat and lengths is None
        margin = tail_reach(self) if halves else 0
        for i, up in enumerate(self.ups):
            x = conv_rows(_mask_(F.leaky_relu_(x, LRELU_SLOPE), masks[i]), up)
            if halves and i == len(self.ups) - 1:
                length = x.shape[-1]
                x = split_halves(x, margin)
            act = _mask_(F.leaky_relu(x, LRELU_SLOPE), masks[i + 1])
            xs = self.resblocks[i * n](x, masks[i + 1], act)
            for j in range(1, n):
                xs += self.resblocks[i * n + j](x, masks[i + 1], act)
            x = xs.div_(n)
        x = conv_rows(_mask_(F.leaky_relu_(x), masks[-1]), self.conv_post)
        x = torch.tanh_(x)
        if halves:
            x = join_halves(x, length)
        return x if flat else x.squeeze(2)

    def _masks(self, lengths: Tensor, frames: int, flat: bool) -> list[Tensor | None]:
        masks: list[Tensor | None] = []
        scale = 1
        for rate in (1, *self.rates):
            scale *= rate
            mask = sequence_mask(lengths * scale, frames * scale).to(self.conv_pre.weight.dtype)
            masks.append(mask if flat else mask.unsqueeze(2))
        return masks


# --------------------------------------------------------------------------- whole model


def _per_item(value: Tensor | float, like: Tensor) -> Tensor:
    """A scale for the whole batch or one per item [B] -> a tensor that broadcasts on [B, C, T]."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1, 1) if t.dim() else t


def _seeded(like: Tensor, lengths: Tensor, seeds: Sequence[int] | None,
            draw: Callable[[int, int], np.ndarray]) -> Tensor:
    """Standard normal noise shaped like `like` [B, C, T]: with seeds, item i's first
    lengths[i] steps are `draw(seed, length)` (stages/families/piper/noise.py), the same
    whatever it is batched with and on every engine; without, the global generator's."""
    if seeds is None:
        return torch.randn_like(like)
    out = torch.zeros_like(like)
    for i, seed in enumerate(seeds):
        n = int(lengths[i])
        out[i, :, :n] = torch.from_numpy(draw(int(seed), n)).to(device=like.device, dtype=like.dtype)
    return out


def _given(noise: Tensor, like: Tensor) -> Tensor:
    """Noise given as an input, cut (or zero-padded) to the width of `like`: the caller
    draws it before the frame count is known, and checks that it drew enough."""
    return torch.cat([noise.to(like.dtype), torch.zeros_like(like)], 2)[:, :, :like.shape[2]]


class VitsModel(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dp: nn.Module = StochasticDurationPredictor(cfg) if cfg.use_sdp else DurationPredictor(cfg)
        self.flow = ResidualCouplingBlock(cfg)
        self.dec = Generator(cfg)
        if cfg.n_speakers > 1:
            self.emb_g = nn.Embedding(cfg.n_speakers, cfg.gin_channels)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    def speaker(self, sid: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        if self.cfg.n_speakers <= 1:
            return None
        if sid is None:
            sid = torch.zeros(batch, dtype=torch.long, device=device)
        return self.emb_g(sid).unsqueeze(-1)

    def acoustic(self, ids: Tensor, lengths: Tensor, noise_scale: Tensor | float = 0.667,
                 length_scale: Tensor | float = 1.0, noise_w: Tensor | float = 0.8, sid: Tensor | None = None,
                 seeds: Sequence[int] | None = None,
                 pad_frames: Callable[[int], int] | None = None) -> tuple[Tensor, Tensor]:
        """Phoneme ids [B, T] -> (latent z [B, C, frames], frames per item [B]).

        Scales are floats or per-item [B] tensors. Noise comes from `seeds` (one per item,
        see stages/families/piper/noise.py) when given, else from the global generator.
        `pad_frames` maps the longest item's frame count to the (larger) width of z;
        padding is zero and masked.
        """
        z, y_lengths, _ = self.acoustic_timed(ids, lengths, noise_scale, length_scale, noise_w, sid, seeds,
                                              pad_frames)
        return z, y_lengths

    def acoustic_timed(self, ids: Tensor, lengths: Tensor, noise_scale: Tensor | float = 0.667,
                       length_scale: Tensor | float = 1.0, noise_w: Tensor | float = 0.8, sid: Tensor | None = None,
                       seeds: Sequence[int] | None = None,
                       pad_frames: Callable[[int], int] | None = None, dp_noise: Tensor | None = None,
                       z_noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`acoustic`, plus the frames each phoneme id lasts [B, T] (0 past an item's length):
        what word timings are made of. `dp_noise` [B, 2, T] and `z_noise` [B, C, >= frames]
        give the noise as tensors instead (the exported graph's inputs)."""
        z_p, y_lengths, durations, y_mask = self.prior_timed(ids, lengths, noise_scale, length_scale, noise_w, sid,
                                                             seeds, pad_frames, dp_noise, z_noise)
        z = self.flow(z_p, y_mask, g=self.speaker(sid, ids.shape[0], ids.device))
        return z * y_mask, y_lengths, durations

    def prior_timed(self, ids: Tensor, lengths: Tensor, noise_scale: Tensor | float = 0.667,
                    length_scale: Tensor | float = 1.0, noise_w: Tensor | float = 0.8, sid: Tensor | None = None,
                    seeds: Sequence[int] | None = None,
                    pad_frames: Callable[[int], int] | None = None, dp_noise: Tensor | None = None,
                    z_noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Everything before the flow: (z_p [B, C, frames], frames [B], durations [B, T],
        frame mask [B, 1, frames]). The flow sees only a few frames either side of each
        frame (`flow_radius`), so z_p can go through it in windows."""
        batch = ids.shape[0]
        g = self.speaker(sid, batch, ids.device)
        x, m_p, logs_p, x_mask = self.enc_p(ids, lengths)
        if isinstance(self.dp, StochasticDurationPredictor):
            like = torch.zeros_like(x_mask).expand(-1, 2, -1).contiguous()
            if dp_noise is None:
                dp_noise = _seeded(like, lengths, seeds, noise.duration_noise)
            logw = self.dp(x, x_mask, dp_noise.to(x.dtype) * _per_item(noise_w, x), g=g)
        else:
            logw = self.dp(x, x_mask, g=g)
        w = torch.exp(logw) * x_mask * _per_item(length_scale, x)
        w_ceil = torch.ceil(w)
        y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
        frames: Tensor | int = y_lengths.max()
        if pad_frames is not None:
            frames = max(pad_frames(int(frames)), int(frames))
        y_mask = sequence_mask(y_lengths, frames).to(x.dtype)

        # Frame t belongs to the token whose cumulative end first exceeds t; frames past the
        # last token (only possible when every duration is 0) get a zero prior.
        ends = torch.cumsum(w_ceil, dim=-1)  # [B, 1, T]
        t = torch.arange(frames, device=ids.device, dtype=ends.dtype)  # type: ignore[call-overload]
        token = (ends.transpose(1, 2) <= t[None, None, :]).sum(1, keepdim=True)  # [B, 1, frames]
        valid = (token < ids.shape[1]).to(x.dtype) * y_mask
        token = token.clamp(max=ids.shape[1] - 1).expand(-1, m_p.shape[1], -1)
        m_p = torch.gather(m_p, 2, token) * valid
        logs_p = torch.gather(logs_p, 2, token) * valid

        channels = m_p.shape[1]
        prior_noise = (_given(z_noise, m_p) if z_noise is not None else
                       _seeded(m_p, y_lengths, seeds, lambda seed, n: noise.latent_noise(seed, channels, n)))
        z_p = m_p + prior_noise * torch.exp(logs_p) * _per_item(noise_scale, x)
        return z_p, y_lengths, w_ceil[:, 0, :], y_mask

    def vocode(self, z: Tensor, y_lengths: Tensor | None = None, sid: Tensor | None = None) -> Tensor:
        """Latent [B, C, frames] -> audio [B, frames * hop]; pass y_lengths for ragged batches."""
        g = self.speaker(sid, z.shape[0], z.device)
        if g is not None:
            g = g.to(self.dec.conv_pre.weight.dtype)
        if y_lengths is not None and bool((y_lengths == z.shape[2]).all()):
            y_lengths = None  # nothing padded: skip the masking work
        return self.dec(z.to(self.dec.conv_pre.weight.dtype), g=g, lengths=y_lengths).squeeze(1)

    def forward(self, ids: Tensor, lengths: Tensor, scales: Tensor, sid: Tensor | None = None) -> Tensor:
        """Piper's graph signature: scales = (noise_scale, length_scale, noise_w) -> [B, 1, 1, samples]."""
        z, y_lengths = self.acoustic(ids, lengths, scales[0], scales[1], scales[2], sid=sid)
        return self.vocode(z, sid=sid).unsqueeze(1).unsqueeze(1)
