"""The speaker-verification embedding that v2Pro/v2ProPlus voices are conditioned on.

GPT-SoVITS uses 3D-Speaker's ERes2NetV2 (base width 24, scale 4, expansion 4; the file
`sv/pretrained_eres2netv2w24s4ep4.ckpt`, a plain state dict) on Kaldi-style 80-bin log-mel
filterbanks of 16 kHz audio, and takes the fused last-stage feature map, averaged over
time, as a 20480-wide embedding (not the 192-wide speaker vector of the full model).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"
SAMPLE_RATE = 16000
_EPS = torch.finfo(torch.float32).eps


def _mel(freq: Tensor | float) -> Tensor | float:
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _mel_banks(n_mels: int, n_fft: int, sample_rate: float, low: float = 20.0) -> Tensor:
    # Built on the CPU in float32 (as Kaldi's reference does), then moved where needed.
    """Kaldi's triangular mel banks [n_mels, n_fft // 2] (the Nyquist bin gets weight 0)."""
    high = 0.5 * sample_rate
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = torch.arange(n_mels).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = _mel((sample_rate / n_fft) * torch.arange(n_fft / 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(up, down))


def fbank(wave: Tensor, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Kaldi `compute-fbank-feats` defaults (25 ms povey windows every 10 ms, snip edges,
    DC removal, 0.97 pre-emphasis, power spectrum, log) on a 1-D waveform -> [frames, n_mels]."""
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    n_fft = 1 if size == 0 else 2 ** (size - 1).bit_length()
    if wave.numel() < size:
        raise ValueError("audio is shorter than one 25 ms frame")
    frames = 1 + (wave.numel() - size) // shift
    x = wave.contiguous().as_strided((frames, size), (shift * wave.stride(0), wave.stride(0)))
    x = x - x.mean(dim=1, keepdim=True)
    previous = F.pad(x.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    x = x - 0.97 * previous
    x = x * torch.hann_window(size, periodic=False, dtype=x.dtype, device=x.device).pow(0.85).unsqueeze(0)
    x = F.pad(x.unsqueeze(0), (0, n_fft - size)).squeeze(0)
    power = torch.fft.rfft(x).abs().pow(2.0)
    banks = F.pad(_mel_banks(n_mels, n_fft, float(sample_rate)), (0, 1)).to(power.device)
    return torch.max(torch.mm(power, banks.T), torch.tensor(_EPS, device=power.device)).log()


class _ClippedReLU(nn.Hardtanh):
    def __init__(self) -> None:
        super().__init__(0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion of two equally shaped maps."""

    def __init__(self, channels: int, r: int = 4) -> None:
        super().__init__()
        inter = channels // r
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, 1), nn.BatchNorm2d(inter), nn.SiLU(),
            nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        att = 1.0 + torch.tanh(self.local_att(torch.cat((x, other), dim=1)))
        return x * att + other * (2.0 - att)


class Block(nn.Module):
    """Res2Net-style block: the 1x1 output split in `scale` groups, each 3x3-convolved with
    the previous group's result added (plainly, or through AFF in the fused stages)."""

    def __init__(self, cin: int, planes: int, stride: int, base_width: int, scale: int, expansion: int,
                 fuse: bool) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(cin, width * scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale))
        if fuse:
            self.fuse_models = nn.ModuleList(AFF(width, 4) for _ in range(scale - 1))
        self.fuse = fuse
        self.relu = _ClippedReLU()
        self.conv3 = nn.Conv2d(width * scale, planes * expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes * expansion:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes * expansion, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes * expansion))

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        sp = parts[0]
        for i in range(self.scale):
            if i > 0:
                sp = self.fuse_models[i - 1](sp, parts[i]) if self.fuse else sp + parts[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return self.relu(out + self.shortcut(x))


class ERes2NetV2(nn.Module):
    def __init__(self, m_channels: int = 64, base_width: int = 24, scale: int = 4, expansion: int = 4,
                 num_blocks: tuple[int, ...] = (3, 4, 6, 3), feat_dim: int = 80, embedding_size: int = 192) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        cin = m_channels
        for index, (mult, n, stride, fuse) in enumerate(((1, num_blocks[0], 1, False), (2, num_blocks[1], 2, False),
                                                         (4, num_blocks[2], 2, True), (8, num_blocks[3], 2, True))):
            blocks = []
            for j in range(n):
                blocks.append(Block(cin, m_channels * mult, stride if j == 0 else 1, base_width, scale, expansion, fuse))
                cin = m_channels * mult * expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.layer3_ds = nn.Conv2d(m_channels * 4 * expansion, m_channels * 8 * expansion, 3, padding=1, stride=2,
                                   bias=False)
        self.fuse34 = AFF(m_channels * 8 * expansion, 4)
        # The speaker head of the full model; kept so that its checkpoint loads strictly.
        self.seg_1 = nn.Linear(int(feat_dim / 8) * m_channels * 8 * expansion * 2, embedding_size)

    def embedding(self, feats: Tensor) -> Tensor:
        """[B, frames, 80] filterbanks -> [B, 20480]: the fused stage 3+4 map, time-averaged."""
        x = feats.permute(0, 2, 1).unsqueeze(1)
        out = F.relu(self.bn1(self.conv1(x)))
        out3 = self.layer3(self.layer2(self.layer1(out)))
        fused = self.fuse34(self.layer4(out3), self.layer3_ds(out3))
        return fused.flatten(start_dim=1, end_dim=2).mean(-1)


def load_speaker_model(state: dict[str, Tensor]) -> ERes2NetV2:
    model = ERes2NetV2()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


@torch.no_grad()
def speaker_embedding(model: ERes2NetV2, wave16k: Tensor) -> Tensor:
    """1-D 16 kHz waveform -> float32 [1, 20480] (the model may run in another precision)."""
    dtype = next(model.parameters()).dtype
    return model.embedding(fbank(wave16k.float()).unsqueeze(0).to(dtype)).float()
