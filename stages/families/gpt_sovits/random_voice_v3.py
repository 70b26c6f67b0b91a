"""Random-weight GPT-SoVITS v3/v4 voices in GPT-SoVITS's own file formats.

Beside the GPT checkpoint (as v2's), a voice gets its SoVITS file either as a full model
(v3: header "02"; v4: untagged, as upstream's own s2Gv4.pth) or as a LoRA file (header
"03"/"04") over a base model written into the pretrained folder, where the vocoder goes
too, in upstream's layout:

    .gsv-pretrained/s2Gv3.pth                                          v3 LoRA base
    .gsv-pretrained/gsv-v4-pretrained/s2Gv4.pth                        v4 LoRA base
    .gsv-pretrained/models--nvidia--bigvgan_v2_24khz_100band_256x/     v3 vocoder
    .gsv-pretrained/gsv-v4-pretrained/vocoder.pth                      v4 vocoder

`size="tiny"` shrinks the CFM transformer, the feature bridge and the vocoder's width so
tests run in seconds; `size="full"` has the released models' sizes (about 330 M
parameters in the CFM; slow to write, for benchmarks).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from voxpipe.stages.families.gpt_sovits.models import bigvgan, checkpoints, vocoder_v4
from voxpipe.stages.families.gpt_sovits.models.dit import DitConfig
from voxpipe.stages.families.gpt_sovits.random_voice import split_weight_norm
from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig
from voxpipe.stages.families.gpt_sovits.models.sovits_v3 import BASE_FILES, PEFT_PREFIX, V3Config, SynthesizerV3

SIZES = ("tiny", "full")
V3_TAG = {"v3": b"02"}
LORA_TAG = {"v3": b"03", "v4": b"04"}
_WN = re.compile(r"^(wns1\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer))\.weight$")
_BIGVGAN_WN = re.compile(r"^(conv_pre|conv_post|ups\.\d+\.0|resblocks\.\d+\.convs[12]\.\d+)\.weight$")


@dataclass(frozen=True)
class Sizes:
    dit: DitConfig
    bridge: int
    wn_layers: int
    filter_channels: int
    n_layers: int
    bigvgan_channels: int
    v4_channels: int


SIZE = {
    "tiny": Sizes(DitConfig(dim=128, depth=2, heads=2, ff_mult=2, text_dim=64, conv_layers=2), 64, 2, 64, 2, 64, 64),
    "full": Sizes(DitConfig(), 512, 8, 768, 6, 1536, 512),
}


def sovits_hparams(version: str, size: str) -> dict:
    s = SIZE[size]
    return {
        "train": {"segment_size": 20480, "seed": 1234, "lora_rank": 8},
        "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640,
                 "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0, "mel_fmax": None, "add_blank": True,
                 "n_speakers": 300, "cleaned_text": True},
        "model": {"inter_channels": 192, "hidden_channels": 192, "filter_channels": s.filter_channels, "n_heads": 2,
                  "n_layers": s.n_layers, "kernel_size": 3, "p_dropout": 0.1, "resblock": "1",
                  "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
                  "upsample_rates": [10, 8, 2, 2, 2], "upsample_initial_channel": 512,
                  "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3, "use_spectral_norm": False,
                  "gin_channels": 512, "semantic_frame_rate": "25hz", "freeze_quantizer": True, "version": version},
        "s2_ckpt_dir": "logs/random", "content_module": "cnhubert", "model_version": version,
    }


def _random_synth(version: str, size: str, generator: torch.Generator) -> tuple[dict, dict[str, torch.Tensor]]:
    from voxpipe.stages.families.gpt_sovits.random_voice import _randomize

    hps = sovits_hparams(version, size)
    s = SIZE[size]
    sovits = SovitsConfig.from_hparams(hps, version, checkpoints.V2_SYMBOLS)
    model = SynthesizerV3(V3Config(sovits, s.dit, s.bridge, s.wn_layers), version)
    _randomize(model, generator, 1.0)
    with torch.no_grad():  # small velocities keep the mel in a speech-like range
        model.cfm.estimator.proj_out.weight.mul_(0.1)
    state = {k: v for k, v in model.state_dict().items() if k != "codebook.embed"}
    embed = torch.randn(1024, 768, generator=generator)
    state.update({"quantizer.vq.layers.0._codebook.inited": torch.tensor([1.0]),
                  "quantizer.vq.layers.0._codebook.cluster_size": torch.ones(1024),
                  "quantizer.vq.layers.0._codebook.embed": embed,
                  "quantizer.vq.layers.0._codebook.embed_avg": embed.clone(),
                  # trained beside the CFM, unused at inference; present in users' files
                  "linear_mel.weight": 0.05 * torch.randn(100, s.bridge, 1, generator=generator),
                  "linear_mel.bias": torch.zeros(100)})
    return hps, split_weight_norm(state, _WN)


def _save(path: Path, checkpoint: dict, tag: bytes | None) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tag + data[2:] if tag else data)


def write_full(path: Path, version: str, size: str, generator: torch.Generator) -> None:
    hps, state = _random_synth(version, size, generator)
    _save(path, {"weight": {k: v.half() for k, v in state.items()}, "config": hps, "info": "random"},
          V3_TAG.get(version))


def write_lora(path: Path, version: str, size: str, generator: torch.Generator, rank: int = 8) -> None:
    """A LoRA file over the base in the pretrained folder: LoRA factors for every attention
    projection of the CFM, plus new weights for the layers LoRA training also updates."""
    hps, state = _random_synth(version, size, generator)
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("ref_enc.", "bridge.", "wns1.", "linear_mel.")):
            weights[key] = value
        elif key.startswith("cfm.") and key.endswith(".weight") and any(f".attn.{t}.weight" in key for t in
                                                                          ("to_q", "to_k", "to_v", "to_out.0")):
            module = PEFT_PREFIX + key[len("cfm."):-len(".weight")]
            out_dim, in_dim = value.shape
            weights[module + ".lora_A.default.weight"] = torch.randn(rank, in_dim, generator=generator) / in_dim ** 0.5
            weights[module + ".lora_B.default.weight"] = 0.1 * torch.randn(out_dim, rank, generator=generator) / rank ** 0.5
    hps["train"]["lora_rank"] = rank
    _save(path, {"weight": {k: v.half() for k, v in weights.items()}, "config": hps, "info": "random lora",
                 "lora_rank": rank}, LORA_TAG[version])


def write_base(pretrained: Path, version: str, size: str, seed: int) -> Path:
    """The base model a LoRA file applies to (kept when there)."""
    path = pretrained / BASE_FILES[version]
    if not path.is_file():
        hps, state = _random_synth(version, size, torch.Generator().manual_seed(seed + 100))
        _save(path, {"weight": {k: v.half() for k, v in state.items()}, "config": hps, "info": "pretrained"}, None)
    return path


def write_vocoder(pretrained: Path, version: str, size: str, seed: int) -> Path:
    from voxpipe.stages.families.gpt_sovits.random_voice import _randomize

    generator = torch.Generator().manual_seed(seed + 200)
    s = SIZE[size]
    if version == "v3":
        folder = pretrained / bigvgan.FOLDER
        if (folder / "bigvgan_generator.pt").is_file():
            return folder
        h = {"resblock": "1", "num_mels": 100, "upsample_rates": [4, 4, 2, 2, 2, 2],
             "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4], "upsample_initial_channel": s.bigvgan_channels,
             "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
             "activation": "snakebeta", "snake_logscale": True, "use_tanh_at_final": False,
             "use_bias_at_final": False, "sampling_rate": 24000, "hop_size": 256, "n_fft": 1024,
             "win_size": 1024, "fmin": 0, "fmax": None}
        model = bigvgan.BigVGAN(bigvgan.BigVganConfig.from_json(h))
        _randomize(model, generator, 1.0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith((".alpha", ".beta")):
                    p.copy_(0.2 * torch.randn(p.shape, generator=generator))
            model.conv_post.weight.mul_(0.002)  # keep the output off its [-1, 1] clamp
        state = dict(model.state_dict())
        state.update({k: v for k, v in bigvgan.BigVGAN(model.cfg).state_dict().items() if k.endswith(".filter")})
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(h, indent=2))
        torch.save({"generator": split_weight_norm(state, _BIGVGAN_WN)}, folder / "bigvgan_generator.pt")
        return folder
    path = pretrained / vocoder_v4.FILE
    if not path.is_file():
        model = vocoder_v4.v4_vocoder(100, s.v4_channels)
        _randomize(model, generator, 1.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path
