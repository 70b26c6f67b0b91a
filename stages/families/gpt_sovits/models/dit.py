"""The flow-matching mel decoder of GPT-SoVITS v3/v4: a diffusion transformer (DiT)
that predicts a velocity for noisy mel frames given the reference prompt's mel and the
semantic features, integrated by a plain Euler loop (`sample`).

Module names follow the checkpoints (`cfm.estimator.*`), so users' weights load as they
are. Sizes come from the weights (`DitConfig.from_weights`): the released models use
dim 1024, depth 22, 16 heads of 64, feed-forward x2, four ConvNeXt text blocks.

Two details the weights were trained with and that results depend on:
- rotary position embedding turns only the first `head_dim` channels of the whole
  query/key projection (that is, head 0), in interleaved pairs;
- the text features get a fixed sinusoidal position table (cos half, then sin half)
  before the ConvNeXt blocks.

Several sequences can share one call: `lengths` marks each one's real frames, and every
operation that mixes frames (convolutions, the ConvNeXt response normalization, attention)
sees zeros past a sequence's end, as it would alone, so batching changes no result beyond
float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

TEXT_POSITIONS = 4096  # the sinusoidal table's length; later frames reuse its last row
FREQ_DIM = 256  # sinusoidal features of the time and step-size inputs


@dataclass(frozen=True)
class DitConfig:
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    head_dim: int = 64
    ff_mult: int = 2
    mel_dim: int = 100
    text_dim: int = 512
    conv_layers: int = 4

    @classmethod
    def from_weights(cls, weights: dict[str, Tensor], prefix: str = "cfm.estimator.") -> "DitConfig":
        """Sizes from the tensors under `prefix` (KeyError when they are not there)."""
        w = lambda name: weights[prefix + name]  # noqa: E731
        dim = int(w("proj_out.weight").shape[1])
        inner = int(w("transformer_blocks.0.attn.to_q.weight").shape[0])
        head_dim = int(w("rotary_embed.inv_freq").shape[0]) * 2 if prefix + "rotary_embed.inv_freq" in weights else 64
        depth = 1 + max(int(k[len(prefix):].split(".")[1]) for k in weights
                        if k.startswith(prefix + "transformer_blocks."))
        blocks = [k for k in weights if k.startswith(prefix + "text_embed.text_blocks.")]
        conv_layers = 1 + max((int(k[len(prefix):].split(".")[2]) for k in blocks), default=-1)
        return cls(dim=dim, depth=depth, heads=inner // head_dim, head_dim=head_dim,
                   ff_mult=int(w("transformer_blocks.0.ff.ff.0.0.weight").shape[0]) // dim,
                   mel_dim=int(w("proj_out.weight").shape[0]),
                   text_dim=int(w("input_embed.proj.weight").shape[1]) - 2 * int(w("proj_out.weight").shape[0]),
                   conv_layers=conv_layers)


def _masked(x: Tensor, keep: Tensor | None) -> Tensor:
    """x [B, T, C] with frames past each sequence's end zeroed (keep: [B, T] bool)."""
    return x if keep is None else x * keep.unsqueeze(-1).to(x.dtype)


def _sinusoidal(t: Tensor, dim: int = FREQ_DIM, scale: float = 1000.0) -> Tensor:
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -rate)
    angles = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.time_mlp(_sinusoidal(t).to(t.dtype))


class GRN(nn.Module):
    """Global response normalization over time (ConvNeXt V2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        gx = torch.norm(x, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        h = self.dwconv(_masked(x, keep).transpose(1, 2)).transpose(1, 2)
        h = F.gelu(self.pwconv1(self.norm(h)))
        return x + self.pwconv2(self.grn(_masked(h, keep)))


class TextEmbedding(nn.Module):
    def __init__(self, text_dim: int, conv_layers: int) -> None:
        super().__init__()
        self.text_blocks = nn.ModuleList([ConvNeXtBlock(text_dim, text_dim * 2) for _ in range(conv_layers)])
        half = text_dim // 2
        freqs = 1.0 / (10000.0 ** (torch.arange(0, text_dim, 2)[:half].float() / text_dim))
        angles = torch.outer(torch.arange(TEXT_POSITIONS).float(), freqs)
        self.register_buffer("table", torch.cat([angles.cos(), angles.sin()], dim=-1), persistent=False)

    def forward(self, text: Tensor, keep: Tensor | None) -> Tensor:
        if not len(self.text_blocks):
            return text
        pos = torch.clamp(torch.arange(text.shape[1], device=text.device), max=TEXT_POSITIONS - 1)
        x = text + self.table[pos].to(text.dtype)
        for block in self.text_blocks:
            x = block(x, keep)
        return x


class ConvPositionEmbedding(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16) -> None:
        super().__init__()
        self.conv1d = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2), nn.Mish(),
                                    nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2), nn.Mish())

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        h = self.conv1d[1](self.conv1d[0](_masked(x, keep).transpose(1, 2)))
        if keep is not None:
            h = h * keep.unsqueeze(1).to(h.dtype)
        return self.conv1d[3](self.conv1d[2](h)).transpose(1, 2)


class InputEmbedding(nn.Module):
    def __init__(self, mel_dim: int, text_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + text_dim, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim)

    def forward(self, x: Tensor, cond: Tensor, text: Tensor, keep: Tensor | None) -> Tensor:
        x = self.proj(torch.cat((x, cond, text), dim=-1))
        return self.conv_pos_embed(x, keep) + x


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def forward(self, n: int) -> tuple[Tensor, Tensor]:
        angles = torch.outer(torch.arange(n, device=self.inv_freq.device).float(), self.inv_freq)
        angles = angles.repeat_interleave(2, dim=-1)  # pairs (2i, 2i+1) share a frequency
        return angles.cos(), angles.sin()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first cos.shape[-1] channels of x [B, T, C] in interleaved pairs."""
    d = cos.shape[-1]
    head, rest = x[..., :d], x[..., d:]
    pairs = head.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((head * cos + turned * sin, rest), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], keep: Tensor | None) -> Tensor:
        b, n, _ = x.shape
        q, k = _rotate(self.to_q(x), *rope), _rotate(self.to_k(x), *rope)
        split = lambda t: t.view(b, n, self.heads, -1).transpose(1, 2)  # noqa: E731
        mask = None if keep is None else keep[:, None, None, :]
        out = F.scaled_dot_product_attention(split(q), split(k), split(self.to_v(x)), attn_mask=mask)
        return _masked(self.to_out[0](out.transpose(1, 2).reshape(b, n, -1)), keep)


class AdaNorm(nn.Module):
    """LayerNorm without affine, shifted and scaled by the time embedding."""

    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim * chunks)
        self.chunks = chunks

    def modulation(self, emb: Tensor) -> tuple[Tensor, ...]:
        return torch.chunk(self.linear(F.silu(emb)), self.chunks, dim=1)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(approximate="tanh")), nn.Identity(),
                                nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


def _layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class DitBlock(nn.Module):
    def __init__(self, cfg: DitConfig) -> None:
        super().__init__()
        self.attn_norm = AdaNorm(cfg.dim, 6)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.head_dim)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult)

    def forward(self, x: Tensor, t: Tensor, rope: tuple[Tensor, Tensor], keep: Tensor | None) -> Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.attn_norm.modulation(t)
        h = _layer_norm(x) * (1 + scale_a[:, None]) + shift_a[:, None]
        x = x + gate_a.unsqueeze(1) * self.attn(h, rope, keep)
        h = _layer_norm(x) * (1 + scale_f[:, None]) + shift_f[:, None]
        return x + gate_f.unsqueeze(1) * self.ff(h)


class DiT(nn.Module):
    def __init__(self, cfg: DitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.d_embed = TimestepEmbedding(cfg.dim)
        self.text_embed = TextEmbedding(cfg.text_dim, cfg.conv_layers)
        self.input_embed = InputEmbedding(cfg.mel_dim, cfg.text_dim, cfg.dim)
        self.rotary_embed = RotaryEmbedding(cfg.head_dim)
        self.transformer_blocks = nn.ModuleList([DitBlock(cfg) for _ in range(cfg.depth)])
        self.norm_out = AdaNorm(cfg.dim, 2)
        self.proj_out = nn.Linear(cfg.dim, cfg.mel_dim)

    def forward(self, x: Tensor, cond: Tensor, text_embed: Tensor, t_embed: Tensor, keep: Tensor | None,
                rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One velocity: x, cond [B, T, mel]; text_embed [B, T, text_dim] (from `text_embed`);
        t_embed [B, dim] (time + step size) -> [B, T, mel]."""
        h = self.input_embed(x, cond, text_embed, keep)
        rope = rope or self.rotary_embed(h.shape[1])
        for block in self.transformer_blocks:
            h = block(h, t_embed, rope, keep)
        scale, shift = self.norm_out.modulation(t_embed)
        return self.proj_out(_layer_norm(h) * (1 + scale)[:, None, :] + shift[:, None, :])


class CFM(nn.Module):
    """`cfm`: the DiT under `estimator`, sampled by `sample`."""

    def __init__(self, cfg: DitConfig) -> None:
        super().__init__()
        self.estimator = DiT(cfg)

    @torch.no_grad()
    def sample(self, features: Tensor, prompt: Tensor, prompt_lens: list[int], steps: int, noise: Tensor,
               lengths: list[int] | None = None) -> Tensor:
        """Euler integration from noise to mel.

        features [B, T, text_dim]; prompt [B, mel, >= max(prompt_lens)] the reference
        mel whose first prompt_lens[i] frames are held; noise [B, mel, T]; lengths: each
        sequence's real frames (None: all T). -> mel [B, mel, T], prompt frames zero."""
        b, _, n = noise.shape
        keep = None
        if lengths is not None and any(length != n for length in lengths):
            keep = torch.arange(n, device=noise.device)[None, :] < torch.tensor(lengths, device=noise.device)[:, None]
        held = torch.zeros_like(noise)
        x = noise.clone()
        for i, p in enumerate(prompt_lens):
            held[i, :, :p] = prompt[i, :, :p]
            x[i, :, :p] = 0
        est = self.estimator
        d = 1 / steps
        text = est.text_embed(features, keep)
        dt = est.d_embed(torch.full((b,), d, dtype=noise.dtype, device=noise.device))
        cond = held.transpose(1, 2)
        rope = est.rotary_embed(n)
        t = 0.0
        for _ in range(steps):
            t_embed = est.time_embed(torch.full((b,), t, dtype=noise.dtype, device=noise.device)) + dt
            v = est(x.transpose(1, 2), cond, text, t_embed, keep, rope).transpose(1, 2)
            x = x + d * v
            t = t + d
            for i, p in enumerate(prompt_lens):
                x[i, :, :p] = 0
        return x
