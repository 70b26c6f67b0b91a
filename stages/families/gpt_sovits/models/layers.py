"""Building blocks of the SoVITS synthesizer (VITS family), for inference only.

Parameter names follow GPT-SoVITS's checkpoints so a state dict loads as it is, once the
weight-norm pairs are folded (see checkpoints.fold_weight_norm). Dropout is left out:
nothing here trains.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.engines.rows_layout import as_rows, channels_last_weights, conv_rows

LRELU_SLOPE = 0.1


def sequence_mask(lengths: Tensor, max_length: int) -> Tensor:
    return torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)[None, :] < lengths[:, None]


def gated_tanh(x: Tensor, g: Tensor, channels: int) -> Tensor:
    """WaveNet gate: tanh(first half) * sigmoid(second half) of x + g."""
    a = x + g
    return torch.tanh(a[:, :channels]) * torch.sigmoid(a[:, channels:])


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] tensors (`gamma`/`beta` as in VITS)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """VITS attention over [B, C, T] with 1x1 convolutions; optional relative positions
    (a window of +-window_size, shared by all heads) for self-attention."""

    def __init__(self, channels: int, out_channels: int, n_heads: int, window_size: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.k_channels, self.window_size = n_heads, channels // n_heads, window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window_size is not None:
            self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window_size + 1, self.k_channels))
            self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window_size + 1, self.k_channels))

    def forward(self, x: Tensor, c: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        b, d, t_s = k.shape
        t_t = q.size(2)
        q = q.view(b, self.n_heads, self.k_channels, t_t).transpose(2, 3)
        k = k.view(b, self.n_heads, self.k_channels, t_s).transpose(2, 3)
        v = v.view(b, self.n_heads, self.k_channels, t_s).transpose(2, 3)
        q = q / math.sqrt(self.k_channels)
        scores = torch.matmul(q, k.transpose(-2, -1))
        if self.window_size is not None:
            rel_k = self._relative_embeddings(self.emb_rel_k, t_s)
            scores = scores + _relative_to_absolute(torch.matmul(q, rel_k.unsqueeze(0).transpose(-2, -1)))
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e4)
        p = F.softmax(scores, dim=-1)
        out = torch.matmul(p, v)
        if self.window_size is not None:
            rel_v = self._relative_embeddings(self.emb_rel_v, t_s)
            out = out + torch.matmul(_absolute_to_relative(p), rel_v.unsqueeze(0))
        return self.conv_o(out.transpose(2, 3).contiguous().view(b, d, t_t))

    def _relative_embeddings(self, emb: Tensor, length: int) -> Tensor:
        """The 2*length-1 relative positions around 0, zero beyond the window."""
        w = self.window_size
        pad = max(length - (w + 1), 0)
        start = max((w + 1) - length, 0)
        if pad > 0:
            emb = F.pad(emb, (0, 0, pad, pad))
        return emb[:, start:start + 2 * length - 1]


def _relative_to_absolute(x: Tensor) -> Tensor:
    """[b, h, l, 2l-1] relative logits -> [b, h, l, l] absolute ones (the skewing trick)."""
    b, h, length, _ = x.shape
    x = F.pad(x, (0, 1)).view(b, h, length * 2 * length)
    x = F.pad(x, (0, length - 1))
    return x.view(b, h, length + 1, 2 * length - 1)[:, :, :length, length - 1:]


def _absolute_to_relative(x: Tensor) -> Tensor:
    """[b, h, l, l] -> [b, h, l, 2l-1], the inverse skew."""
    b, h, length, _ = x.shape
    x = F.pad(x, (0, length - 1)).view(b, h, length * length + length * (length - 1))
    x = F.pad(x, (length, 0))
    return x.view(b, h, length, 2 * length)[:, :, :, 1:]


class FFN(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def _pad(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        return x if k == 1 else F.pad(x, ((k - 1) // 2, k // 2))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = torch.relu(self.conv_1(self._pad(x * mask)))
        return self.conv_2(self._pad(x * mask)) * mask


class AttentionEncoder(nn.Module):
    """A stack of relative-position self-attention + FFN layers, post-norm."""

    def __init__(self, hidden: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int,
                 window_size: int = 4) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.attn_layers = nn.ModuleList(MultiHeadAttention(hidden, hidden, n_heads, window_size) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(hidden) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FFN(hidden, filter_channels, kernel_size) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(hidden) for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)
        x = x * mask
        for i in range(self.n_layers):
            x = self.norm_layers_1[i](x + self.attn_layers[i](x, x, attn_mask))
            x = self.norm_layers_2[i](x + self.ffn_layers[i](x, mask))
        return x * mask


class WN(nn.Module):
    """Non-causal WaveNet with a global condition (weights already folded)."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden, self.n_layers = hidden, n_layers
        if gin_channels:
            self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate ** i
            self.in_layers.append(nn.Conv1d(hidden, 2 * hidden, kernel_size, dilation=dilation,
                                            padding=(kernel_size * dilation - dilation) // 2))
            self.res_skip_layers.append(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1))

    def forward(self, x: Tensor, mask: Tensor, g: Tensor | None = None) -> Tensor:
        output = torch.zeros_like(x)
        g = self.cond_layer(g) if g is not None else None
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            g_l = g[:, i * 2 * self.hidden:(i + 1) * 2 * self.hidden] if g is not None else torch.zeros_like(x_in)
            res_skip = self.res_skip_layers[i](gated_tanh(x_in, g_l, self.hidden))
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :self.hidden]) * mask
                output = output + res_skip[:, self.hidden:]
            else:
                output = output + res_skip
        return output * mask


class CouplingLayer(nn.Module):
    """Mean-only affine coupling; only the reverse (sampling) direction is needed."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor | None) -> Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], 1)
        h = self.enc(self.pre(x0) * mask, mask, g=g)
        m = self.post(h) * mask
        x1 = (x1 - m) * mask
        return torch.cat([x0, x1], 1)


class Flow(nn.Module):
    """Four couplings with channel flips between them (`flows.0`, `flows.2`, ...)."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int, n_flows: int = 4) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(CouplingLayer(channels, hidden, kernel_size, dilation_rate, n_layers, gin_channels))
            self.flows.append(nn.Identity())  # the flip: no parameters

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor | None) -> Tensor:
        for flow in reversed(self.flows):
            x = torch.flip(x, [1]) if isinstance(flow, nn.Identity) else flow.reverse(x, mask, g)
        return x


def _padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size))
                                    for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = conv_rows(F.leaky_relu(conv_rows(F.leaky_relu(x, LRELU_SLOPE), c1), LRELU_SLOPE), c2) + x
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d))
                                   for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c in self.convs:
            x = conv_rows(F.leaky_relu(x, LRELU_SLOPE), c) + x
        return x


class Generator(nn.Module):
    """HiFi-GAN generator `dec`: latent [B, C, T] -> audio [B, 1, T * prod(upsample_rates)].

    Inside, every convolution runs as the 2-D one with the same taps on [B, C, 1, T] in
    channels-last order, weights stored to match (stages/engines/rows_layout.py): a
    full-size v2 decoder 1.34-1.48x faster than 1-D on one or two CPU threads, the audio
    equal to 1e-8."""

    def __init__(self, in_channels: int, resblock: str, resblock_kernel_sizes: Sequence[int],
                 resblock_dilation_sizes: Sequence[Sequence[int]], upsample_rates: Sequence[int],
                 upsample_initial_channel: int, upsample_kernel_sizes: Sequence[int], gin_channels: int) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(in_channels, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(nn.ConvTranspose1d(upsample_initial_channel // (2 ** i), ch, k, u, padding=(k - u) // 2))
            for ks, ds in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, ks, ds))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)
        for part in (self.conv_pre, self.ups, self.resblocks, self.conv_post):  # not `cond`: it stays 1-D
            channels_last_weights(part)

    def forward(self, x: Tensor, g: Tensor | None = None) -> Tensor:
        x = conv_rows(as_rows(x), self.conv_pre)
        if g is not None:
            x = x + self.cond(g).unsqueeze(2)
        for i, up in enumerate(self.ups):
            x = conv_rows(F.leaky_relu(x, LRELU_SLOPE), up)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs * (1.0 / self.num_kernels)
        return torch.tanh(conv_rows(F.leaky_relu(x), self.conv_post)).squeeze(2)
