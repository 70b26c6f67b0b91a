"""The SoVITS side of GPT-SoVITS v3/v4: semantic tokens -> features for the CFM mel
decoder (dit.py), whose mel a vocoder turns into audio.

tokens --codebook--> content --2x--> text encoder (as v2: content attends to the phones,
conditioned on the reference timbre `ge`) --> bridge (1x1 conv + leaky ReLU) --> nearest
upsampling to the mel rate (x1.875: 50 -> 93.75 frames/s for v3; x2: 100 frames/s for
v4) --> WaveNet `wns1` conditioned on `ge` --> CFM features [B, 512, frames].

Checkpoints as users have them:
- a full model: header "02" (v3), or a plain zip whose weights include `cfm.*`;
- LoRA files: header "03" (v3) / "04" (v4), holding the LoRA factors of the CFM's
  attention projections (to_q, to_k, to_v, to_out.0) plus the other layers that were
  trained; they apply to the base model `s2Gv3.pth` / `gsv-v4-pretrained/s2Gv4.pth` of
  the pretrained folder, merged as W + B @ A * alpha / rank (alpha = rank when saved).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.models import checkpoints
from voxpipe.stages.families.gpt_sovits.models.checkpoints import CheckpointError, fold_weight_norm, load_exact
from voxpipe.stages.families.gpt_sovits.models.dit import CFM, DitConfig
from voxpipe.stages.families.gpt_sovits.models.layers import WN, sequence_mask
from voxpipe.stages.families.gpt_sovits.models.sovits import SSL_DIM, Codebook, MelStyleEncoder, SovitsConfig, TextEncoder

V3_TAGS = {b"02": ("v3", False), b"03": ("v3", True), b"04": ("v4", True)}
BASE_FILES = {"v3": "s2Gv3.pth", "v4": "gsv-v4-pretrained/s2Gv4.pth"}
MEL_SCALE = {"v3": 1.875, "v4": 2.0}  # 50 Hz content frames -> mel frames
LENGTH_SCALE = {"v3": 3.875, "v4": 4.0}  # per token, for the WaveNet's mask (as upstream computes it)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PEFT_PREFIX = "cfm.base_model.model."


@dataclass(frozen=True)
class V3Config:
    sovits: SovitsConfig  # the text encoder's and reference encoder's sizes
    dit: DitConfig
    bridge_channels: int = 512
    wn_layers: int = 8
    mel_channels: int = 100


class MelFeatureEncoder(nn.Module):
    """`wns1`: 1x1 in, WaveNet conditioned on ge, 1x1 out."""

    def __init__(self, channels: int, layers: int, gin_channels: int) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.enc = WN(channels, 5, 1, layers, gin_channels)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, length: int, g: Tensor) -> Tensor:
        mask = sequence_mask(torch.tensor([length], device=x.device), x.size(2)).unsqueeze(1).to(x.dtype)
        return self.proj(self.enc(self.pre(x) * mask, mask, g)) * mask


class SynthesizerV3(nn.Module):
    def __init__(self, cfg: V3Config, version: str) -> None:
        super().__init__()
        self.cfg, self.version = cfg, version
        sc = cfg.sovits
        self.enc_p = TextEncoder(sc)
        self.ref_enc = MelStyleEncoder(704, sc.gin_channels)
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        self.codebook = Codebook()
        self.bridge = nn.Sequential(nn.Conv1d(sc.inter_channels, cfg.bridge_channels, 1), nn.LeakyReLU())
        self.wns1 = MelFeatureEncoder(cfg.bridge_channels, cfg.wn_layers, sc.gin_channels)
        self.cfm = CFM(cfg.dit)

    @torch.no_grad()
    def extract_tokens(self, hubert: Tensor) -> Tensor:
        return self.codebook.encode(self.ssl_proj(hubert))

    @torch.no_grad()
    def timbre(self, refer_spec: Tensor) -> Tensor:
        """Reference linear spectrogram [1, F, T] -> ge [1, gin, 1]."""
        mask = torch.ones(1, 1, refer_spec.size(2), dtype=refer_spec.dtype, device=refer_spec.device)
        return self.ref_enc(refer_spec[:, :704] * mask, mask)

    @torch.no_grad()
    def features(self, tokens: Tensor, phones: Tensor, ge: Tensor, speed: float = 1.0) -> Tensor:
        """Semantic tokens [1, T] + phone ids [1, P] -> CFM features [1, bridge, frames]."""
        n = tokens.shape[1]
        content = F.interpolate(self.codebook.decode(tokens), scale_factor=2, mode="nearest")
        enc = self.enc_p
        y_mask = torch.ones(1, 1, content.size(2), dtype=content.dtype, device=content.device)
        y = enc.encoder_ssl(enc.ssl_proj(content), y_mask)
        text_mask = torch.ones(1, 1, phones.size(1), dtype=y.dtype, device=y.device)
        t = enc.encoder_text(enc.text_embedding(phones).transpose(1, 2), text_mask)
        y = enc.encoder2(enc.mrte(y, y_mask, t, text_mask, ge), y_mask)
        if speed != 1:
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
        fea = F.interpolate(self.bridge(y), scale_factor=MEL_SCALE[self.version], mode="nearest")
        length = int(n * LENGTH_SCALE[self.version]) if speed == 1 else int(n * LENGTH_SCALE[self.version] / speed) + 1
        return self.wns1(fea, length, ge)


def read_v3_checkpoint(path: Path) -> tuple[str | None, bool, dict[str, Any]]:
    """A v3/v4 SoVITS file -> (version from its header or None, is LoRA, the checkpoint)."""
    data = checkpoints._read(path)
    head = data[:2]
    if head == b"PK":
        version, lora = None, False
    elif head in V3_TAGS:
        version, lora = V3_TAGS[head]
        data = b"PK" + data[2:]
    else:
        raise CheckpointError(f"{path.name}: header {head!r} is not a GPT-SoVITS v3/v4 SoVITS file "
                              "(02: v3, 03: v3 LoRA, 04: v4 LoRA, or an untagged full model)")
    obj = checkpoints._load(data, path.name)
    if head == b"PK" and not any(k.startswith("cfm.") for k in obj["weight"]):
        raise CheckpointError(f"{path.name}: has no CFM weights, so it is not a v3/v4 model")
    if lora and "lora_rank" not in obj:
        raise CheckpointError(f"{path.name}: a LoRA file without 'lora_rank'")
    return version, lora, obj


def merge_lora(base: dict[str, Tensor], lora: dict[str, Tensor], rank: int, alpha: float | None = None) -> dict[str, Tensor]:
    """Base weights + a LoRA file's weights (peft names under `cfm.base_model.model.`):
    its plain tensors replace the base's, its factor pairs are merged into the targets."""
    out = dict(base)
    factors: dict[str, dict[str, Tensor]] = {}
    for key, value in lora.items():
        if ".lora_A." in key or ".lora_B." in key:
            which = "A" if ".lora_A." in key else "B"
            module = key.split(f".lora_{which}.")[0]
            factors.setdefault(module, {})[which] = value.float()
        elif key.startswith(PEFT_PREFIX):
            out["cfm." + key[len(PEFT_PREFIX):].replace(".base_layer.", ".")] = value.float()
        else:
            out[key] = value.float()
    scale = (alpha if alpha is not None else rank) / rank
    for module, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"LoRA factors of {module} are incomplete")
        if not module.startswith(PEFT_PREFIX) or not module.endswith(LORA_TARGETS):
            raise CheckpointError(f"unexpected LoRA target {module}")
        target = "cfm." + module[len(PEFT_PREFIX):] + ".weight"
        if target not in out:
            raise CheckpointError(f"LoRA target {target} is not in the base model")
        out[target] = out[target] + (pair["B"] @ pair["A"]) * scale
    if not factors:
        raise CheckpointError("the LoRA file holds no LoRA factors")
    return out


def load_v3_weights(path: Path, version: str, pretrained: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config, fp32 weights with LoRA merged) of a user's v3/v4 file; the version is the
    voice's, checked against the file's header."""
    tagged, lora, obj = read_v3_checkpoint(path)
    if tagged is not None and tagged != version:
        raise CheckpointError(f"{path.name}: a {tagged} file, but the voice says {version}")
    weights = fold_weight_norm(obj["weight"])
    config = checkpoints.to_plain(obj["config"])
    if lora:
        base_path = pretrained / BASE_FILES[version]
        if not base_path.is_file():
            raise CheckpointError(f"{path.name} is a {version} LoRA file; its base model is missing: expected {base_path}")
        _, _, base = read_v3_checkpoint(base_path)
        weights = merge_lora(fold_weight_norm(base["weight"]), weights, int(obj["lora_rank"]))
    return config, weights


def v3_config(hps: dict[str, Any], weights: dict[str, Tensor], version: str) -> V3Config:
    n_symbols = int(weights["enc_p.text_embedding.weight"].shape[0])
    sovits = replace(SovitsConfig.from_hparams(hps, "v2", n_symbols), version=version)
    wn_layers = 1 + max(int(k.split(".")[3]) for k in weights if k.startswith("wns1.enc.in_layers."))
    return V3Config(sovits, DitConfig.from_weights(weights), int(weights["bridge.0.weight"].shape[0]), wn_layers,
                    int(weights["cfm.estimator.proj_out.weight"].shape[0]))


def load_synthesizer_v3(path: Path, version: str, pretrained: Path) -> SynthesizerV3:
    config, weights = load_v3_weights(path, version, pretrained)
    try:
        cfg = v3_config(config, weights, version)
        state = dict(weights)
        if "quantizer.vq.layers.0._codebook.embed" in state:
            state["codebook.embed"] = state["quantizer.vq.layers.0._codebook.embed"]
        return load_exact(SynthesizerV3(cfg, version), state, "SoVITS checkpoint")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
