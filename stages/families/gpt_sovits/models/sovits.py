"""The SoVITS synthesizer's inference path (GPT-SoVITS v1/v2/v2Pro/v2ProPlus).

semantic tokens --codebook--> content [B, 768, T] --2x nearest--> text encoder (content
attends to the phones through MRTE, conditioned on the reference timbre) --> prior
mean/log-std --> reverse flow --> HiFi-GAN decoder --> 32 kHz audio.

The reference timbre `ge` comes from the reference clip's linear spectrogram through a
style encoder (plus, for v2Pro/v2ProPlus, a speaker-verification embedding); it is
computed once per voice (`condition`) and reused by every request.
"""
from __future__ import annotations

import copy

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models.checkpoints import load_exact
from voxpipe.stages.families.gpt_sovits.models.layers import AttentionEncoder, Flow, Generator, MultiHeadAttention, sequence_mask

SSL_DIM = 768  # HuBERT-base features
PRO_VERSIONS = ("v2Pro", "v2ProPlus")
SV_DIM = 20480  # the speaker-verification embedding GPT-SoVITS's Pro models take


@dataclass(frozen=True)
class SovitsConfig:
    """The fields of a SoVITS checkpoint's `config` that inference needs."""

    version: str  # v1 | v2 | v2Pro | v2ProPlus
    n_symbols: int
    spec_channels: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    gin_channels: int
    semantic_frame_rate: str
    sampling_rate: int
    filter_length: int
    hop_length: int
    win_length: int

    @property
    def is_pro(self) -> bool:
        return self.version in PRO_VERSIONS

    @property
    def upsample_factor(self) -> int:
        return int(np.prod(self.upsample_rates))

    @classmethod
    def from_hparams(cls, hps: Any, version: str, n_symbols: int) -> "SovitsConfig":
        model, data = hps["model"], hps["data"]
        return cls(
            version=version, n_symbols=n_symbols,
            spec_channels=int(data["filter_length"]) // 2 + 1,
            inter_channels=int(model["inter_channels"]), hidden_channels=int(model["hidden_channels"]),
            filter_channels=int(model["filter_channels"]), n_heads=int(model["n_heads"]),
            n_layers=int(model["n_layers"]), kernel_size=int(model["kernel_size"]),
            resblock=str(model["resblock"]),
            resblock_kernel_sizes=tuple(int(k) for k in model["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in model["resblock_dilation_sizes"]),
            upsample_rates=tuple(int(u) for u in model["upsample_rates"]),
            upsample_initial_channel=int(model["upsample_initial_channel"]),
            upsample_kernel_sizes=tuple(int(k) for k in model["upsample_kernel_sizes"]),
            gin_channels=int(model["gin_channels"]),
            semantic_frame_rate="25hz",  # GPT-SoVITS sets it so at inference, whatever the file says
            sampling_rate=int(data["sampling_rate"]), filter_length=int(data["filter_length"]),
            hop_length=int(data["hop_length"]), win_length=int(data["win_length"]),
        )


class MRTE(nn.Module):
    """Content features attend to the phones; the timbre vector is added (512 wide)."""

    def __init__(self, channels: int = 192, hidden: int = 512, n_heads: int = 4) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(hidden, hidden, n_heads)
        self.c_pre = nn.Conv1d(channels, hidden, 1)
        self.text_pre = nn.Conv1d(channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, channels, 1)

    def forward(self, ssl: Tensor, ssl_mask: Tensor, text: Tensor, text_mask: Tensor, ge: Tensor) -> Tensor:
        attn_mask = text_mask.unsqueeze(2) * ssl_mask.unsqueeze(-1)
        ssl = self.c_pre(ssl * ssl_mask)
        text = self.text_pre(text * text_mask)
        x = self.cross_attention(ssl * ssl_mask, text * text_mask, attn_mask) + ssl + ge
        return self.c_post(x * ssl_mask)


class TextEncoder(nn.Module):
    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        h, f, nh, nl, k = cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size
        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(SSL_DIM, h, 1)
        self.encoder_ssl = AttentionEncoder(h, f, nh, nl // 2, k)
        self.encoder_text = AttentionEncoder(h, f, nh, nl, k)
        self.text_embedding = nn.Embedding(cfg.n_symbols, h)
        self.mrte = MRTE(h)
        self.encoder2 = AttentionEncoder(h, f, nh, nl // 2, k)
        self.proj = nn.Conv1d(h, cfg.inter_channels * 2, 1)

    def forward(self, y: Tensor, y_lengths: Tensor, text: Tensor, text_lengths: Tensor, ge: Tensor,
                speed: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        y_mask = sequence_mask(y_lengths, y.size(2)).unsqueeze(1).to(y.dtype)
        y = self.ssl_proj(y * y_mask) * y_mask
        y = self.encoder_ssl(y * y_mask, y_mask)
        text_mask = sequence_mask(text_lengths, text.size(1)).unsqueeze(1).to(y.dtype)
        t = self.encoder_text(self.text_embedding(text).transpose(1, 2) * text_mask, text_mask)
        y = self.mrte(y, y_mask, t, text_mask, ge)
        y = self.encoder2(y * y_mask, y_mask)
        if speed != 1:
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
            y_mask = F.interpolate(y_mask, size=y.shape[-1], mode="nearest")
        stats = self.proj(y) * y_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return m, logs, y_mask


class _Linear(nn.Module):
    """`LinearNorm`: a Linear kept under `.fc` so checkpoint names match."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class _GLU(nn.Module):
    """Conv + gated linear unit with a residual (`temporal.N.conv1.conv`)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Module()
        self.conv1.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(self.conv1.conv(x), self.channels, dim=1)
        return x + a * torch.sigmoid(b)


class _StyleAttention(nn.Module):
    """Plain multi-head self-attention of the style encoder; scores scale by sqrt(d_model)."""

    def __init__(self, n_heads: int, d_model: int) -> None:
        super().__init__()
        self.n_heads, self.d_k, self.temperature = n_heads, d_model // n_heads, float(np.power(d_model, 0.5))
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, _ = x.shape
        n, d = self.n_heads, self.d_k

        def heads(proj: nn.Linear) -> Tensor:
            return proj(x).view(b, t, n, d).permute(2, 0, 1, 3).contiguous().view(-1, t, d)
        q, k, v = heads(self.w_qs), heads(self.w_ks), heads(self.w_vs)
        scores = torch.bmm(q, k.transpose(1, 2)) / self.temperature
        scores = scores.masked_fill(mask.repeat(n, 1, 1), -np.inf)
        out = torch.bmm(torch.softmax(scores, dim=2), v)
        out = out.view(n, b, t, d).permute(1, 2, 0, 3).contiguous().view(b, t, -1)
        return self.fc(out) + x


class MelStyleEncoder(nn.Module):
    """Reference spectrogram [B, F, T] -> timbre vector [B, gin, 1]."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, kernel_size: int = 5, n_heads: int = 2) -> None:
        super().__init__()
        self.spectral = nn.ModuleDict({"0": _Linear(in_dim, hidden), "3": _Linear(hidden, hidden)})
        self.temporal = nn.ModuleList([_GLU(hidden, kernel_size), _GLU(hidden, kernel_size)])
        self.slf_attn = _StyleAttention(n_heads, hidden)
        self.fc = _Linear(hidden, out_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        pad = (mask.int() == 0).squeeze(1)  # True where padded
        mish = lambda v: v * torch.tanh(F.softplus(v))  # noqa: E731
        x = mish(self.spectral["3"](mish(self.spectral["0"](x))))
        x = x.transpose(1, 2)
        for glu in self.temporal:
            x = glu(x)
        x = x.transpose(1, 2).masked_fill(pad.unsqueeze(-1), 0)
        x = self.fc(self.slf_attn(x, pad.unsqueeze(1).expand(-1, x.shape[1], -1)))
        lengths = (~pad).sum(dim=1).unsqueeze(1)
        pooled = torch.div(x.masked_fill(pad.unsqueeze(-1), 0).float(), lengths.unsqueeze(1)).sum(dim=1).to(x.dtype)
        return pooled.unsqueeze(-1)


class Codebook(nn.Module):
    """The single residual-VQ layer: HuBERT-rate features <-> semantic tokens."""

    def __init__(self, bins: int = 1024, dim: int = SSL_DIM) -> None:
        super().__init__()
        self.register_buffer("embed", torch.zeros(bins, dim))

    def encode(self, x: Tensor) -> Tensor:
        """[B, D, T] -> token ids [B, T] (nearest code by euclidean distance)."""
        b, d, t = x.shape
        flat = x.transpose(1, 2).reshape(-1, d)
        embed = self.embed.t()
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(b, t)

    def decode(self, ids: Tensor) -> Tensor:
        """[B, T] -> [B, D, T]."""
        return F.embedding(ids, self.embed).transpose(1, 2)


class Synthesizer(nn.Module):
    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(cfg.inter_channels, cfg.resblock, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes,
                             cfg.upsample_rates, cfg.upsample_initial_channel, cfg.upsample_kernel_sizes, cfg.gin_channels)
        self.flow = Flow(cfg.inter_channels, cfg.hidden_channels, 5, 1, 4, cfg.gin_channels)
        # The vocoder's precision (set_vocoder_precision): fp32 runs `dec`; bf16 / fp16 a
        # converted copy of it, made when chosen.
        self.vocoder_precision = "fp32"
        self.vocoder_half: nn.Module | None = None
        self.ref_enc = MelStyleEncoder(cfg.spec_channels if cfg.version == "v1" else 704, cfg.gin_channels)
        stride = 2 if cfg.semantic_frame_rate == "25hz" else 1
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, stride, stride=stride)
        self.codebook = Codebook()
        if cfg.is_pro:
            self.sv_emb = nn.Linear(SV_DIM, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, 512)
            self.prelu = nn.PReLU(num_parameters=cfg.gin_channels)

    @torch.no_grad()
    def extract_tokens(self, hubert: Tensor) -> Tensor:
        """HuBERT features [B, 768, T50] -> semantic tokens [B, T25]."""
        return self.codebook.encode(self.ssl_proj(hubert))

    @torch.no_grad()
    def condition(self, refer_spec: Tensor, sv_embedding: Tensor | None) -> tuple[Tensor, Tensor]:
        """Reference spectrogram [1, F, T] (+ SV embedding [1, 20480]) -> (ge for flow and
        decoder, ge for the text encoder)."""
        length = torch.tensor([refer_spec.size(2)], device=refer_spec.device)
        mask = sequence_mask(length, refer_spec.size(2)).unsqueeze(1).to(refer_spec.dtype)
        spec = refer_spec if self.cfg.version == "v1" else refer_spec[:, :704]
        ge = self.ref_enc(spec * mask, mask)
        if self.cfg.is_pro:
            if sv_embedding is None:
                raise ValueError(f"a {self.cfg.version} voice needs a speaker-verification embedding")
            ge = self.prelu(ge + self.sv_emb(sv_embedding).unsqueeze(-1))
            return ge, self.ge_to512(ge.transpose(2, 1)).transpose(2, 1)
        return ge, ge

    def condition_many(self, timbres: list[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor]:
        """`condition` of several clips fused: the mean of their style vectors (each with its
        own speaker embedding), then the text encoder's from that mean."""
        if len(timbres) == 1:
            return self.condition(*timbres[0])
        ge = torch.stack([self.condition(spec, sv)[0] for spec, sv in timbres]).mean(0)
        return ge, (self.ge_to512(ge.transpose(2, 1)).transpose(2, 1) if self.cfg.is_pro else ge)

    @torch.no_grad()
    def latent(self, tokens: Tensor, phones: Tensor, ge: Tensor, ge_text: Tensor, noise_scale: float,
               speed: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Semantic tokens [1, T] + phone ids [1, P] -> decoder latent z [1, C, 2T*(1/speed)]."""
        content = self.codebook.decode(tokens)
        if self.cfg.semantic_frame_rate == "25hz":
            content = F.interpolate(content, size=int(content.shape[-1] * 2), mode="nearest")
        y_lengths = torch.tensor([content.size(2)], device=content.device)
        phone_lengths = torch.tensor([phones.size(1)], device=content.device)
        m, logs, y_mask = self.enc_p(content, y_lengths, phones, phone_lengths, ge_text, speed)
        z_p = m
        if noise_scale:
            noise = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
            z_p = m + noise * torch.exp(logs) * noise_scale
        return self.flow.reverse(z_p, y_mask, ge) * y_mask

    @torch.no_grad()
    def vocode(self, z: Tensor, ge: Tensor) -> Tensor:
        """Latent [1, C, T] -> audio [T * upsample_factor] (float32)."""
        return self.run_vocoder(z, ge)[0, 0]

    def set_vocoder_precision(self, precision: str) -> None:
        """Run the vocoder in fp32 (its own weights), or bf16 / fp16 (a converted copy;
        audio comes back in float32). The choice per machine: precision.py."""
        if precision == self.vocoder_precision:
            return
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if precision != "fp32" and dtype is None:
            raise ValueError(f"vocoder precision {precision!r}: fp32, bf16 or fp16")
        self.vocoder_half = None if dtype is None else copy.deepcopy(self.dec).to(dtype).eval()
        self.vocoder_precision = precision

    @torch.no_grad()
    def run_vocoder(self, z: Tensor, ge: Tensor) -> Tensor:
        """Latents [n, C, T] -> audio [n, 1, T * upsample_factor], float32, in the vocoder's precision."""
        half = self.vocoder_half
        if half is None:
            return self.dec(z, g=ge)
        dtype = next(half.parameters()).dtype
        return half(z.to(dtype), g=ge.to(dtype)).float()


def load_synthesizer(cfg: SovitsConfig, weights: dict[str, Tensor]) -> Synthesizer:
    """Build the synthesizer and load folded fp32 weights; raise KeyError naming what is missing."""
    state = dict(weights)
    if "quantizer.vq.layers.0._codebook.embed" in state:
        state["codebook.embed"] = state["quantizer.vq.layers.0._codebook.embed"]
    return load_exact(Synthesizer(cfg), state, "SoVITS checkpoint")

