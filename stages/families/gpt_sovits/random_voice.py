"""Write a random-weight GPT-SoVITS voice in GPT-SoVITS's own file formats.

Two sizes: "tiny" (a few MB; tests) and "full", the released models' dimensions
(text-to-semantic 24 layers x 512 with 16 heads; SoVITS as upstream's s2 config of each
version; BERT-large; HuBERT-base), so that speed and memory are measured on real shapes.

The voice directory gets both checkpoints (GPT `.ckpt`; SoVITS `.pth` with fp16 weights,
the weight-norm pairs and, for Pro versions, the two-byte version tag), a reference clip
and `voice.toml`. The pretrained feature models (a small HuBERT and BERT built from their
configs with transformers; for Pro versions the speaker-verification network, whose size
GPT-SoVITS fixes) go to a shared `.gsv-pretrained/` directory beside the voices in their
Hugging Face layout. Nothing is downloaded; the same seed writes the same voice.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from voxpipe.stages.families.gpt_sovits.models import checkpoints, features, speaker
from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig, Synthesizer
from voxpipe.stages.families.gpt_sovits.decoder.t2s import T2SConfig, Text2Semantic
from voxpipe.stages.families.gpt_sovits.voice_config import PRETRAINED_DIRNAME

SIZES = ("tiny", "full")

REFERENCE_TEXT = "你好，这是一段参考音频。"
REFERENCE_LANG = "zh"
# Characters the random BERT knows; any other character becomes [UNK] (still one token).
_VOCAB_CHARS = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后"
                "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
                "参考音频段语测试合声，。！？、；：,.!?-…")


# The layers GPT-SoVITS keeps in weight-norm form: the decoder's upsampling and residual
# convolutions and the flow's WaveNet convolutions.
_WEIGHT_NORMED = re.compile(r"^(dec\.ups\.\d+|dec\.resblocks\.\d+\.convs[12]?\.\d+|"
                            r"flow\.flows\.\d+\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer))\.weight$")


def _weight_norm_split(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return split_weight_norm(state, _WEIGHT_NORMED)


def split_weight_norm(state: dict[str, torch.Tensor], pattern: re.Pattern) -> dict[str, torch.Tensor]:
    """Rewrite `X.weight` of the weight-normed layers as `X.weight_g` + `X.weight_v`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if pattern.match(key):
            base = key[: -len(".weight")]
            out[base + ".weight_g"] = torch.norm_except_dim(value, 2, 0)
            out[base + ".weight_v"] = value
        else:
            out[key] = value
    return out


def _sovits_model_hparams(version: str, size: str) -> dict:
    pro = version in ("v2Pro", "v2ProPlus")
    if size == "tiny":
        return {"inter_channels": 32, "hidden_channels": 192, "filter_channels": 64, "n_heads": 2, "n_layers": 2,
                "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3, 5]], "upsample_rates": [10, 8, 2, 2, 2],
                "upsample_initial_channel": 32, "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3,
                "use_spectral_norm": False, "gin_channels": 128 if pro else 512}
    # Upstream's s2.json (v1, v2), s2v2Pro.json and s2v2ProPlus.json.
    plus = version == "v2ProPlus"
    return {"inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6,
            "kernel_size": 3, "p_dropout": 0.0 if pro else 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5]] * 3, "upsample_rates": [10, 8, 2, 2, 2],
            "upsample_initial_channel": 768 if plus else 512,
            "upsample_kernel_sizes": [20 if plus else 16, 16, 8, 2, 2], "n_layers_q": 3, "use_spectral_norm": False,
            "gin_channels": 1024 if pro else 512}


def _sovits_hparams(version: str, size: str = "tiny") -> dict:
    return {
        "train": {"segment_size": 20480, "seed": 1234},
        "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640,
                 "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0, "mel_fmax": None, "add_blank": True,
                 "n_speakers": 300, "cleaned_text": True},
        "model": {**_sovits_model_hparams(version, size), "semantic_frame_rate": "25hz", "freeze_quantizer": True,
                  "version": version},
        "s2_ckpt_dir": "logs/random", "content_module": "cnhubert", "model_version": version,
    }


def _save_pretrained(model: nn.Module, config, directory: Path, state: dict[str, torch.Tensor], size: str) -> None:
    """Weights and config.json; full size in fp16 with `"torch_dtype": "float16"`, as the
    released folders are (the engine loads them in its own precision whatever that says)."""
    if size == "full":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, directory / "pytorch_model.bin")
    config.to_json_file(str(directory / "config.json"), use_diff=False)
    if size == "full":
        fields = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        fields.pop("dtype", None)
        fields["torch_dtype"] = "float16"
        (directory / "config.json").write_text(json.dumps(fields, indent=2), encoding="utf-8")


def _randomize(module: nn.Module, generator: torch.Generator, gain: float = 1.0) -> None:
    """Fan-in scaled normal weights (signals keep their scale through the layers), small
    random biases, norms near identity."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("gamma", "norm1.weight", "norm2.weight", "alpha")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator))
            elif p.dim() >= 2:
                fan_in = p[0].numel() if not isinstance(module, nn.Embedding) else 1
                std = gain / max(1.0, float(fan_in)) ** 0.5
                p.copy_(std * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def write_sovits(path: Path, version: str, generator: torch.Generator, size: str = "tiny") -> None:
    hps = _sovits_hparams(version, size)
    n_symbols = checkpoints.V1_SYMBOLS if version == "v1" else checkpoints.V2_SYMBOLS
    cfg = SovitsConfig.from_hparams(hps, version, n_symbols)
    model = Synthesizer(cfg)
    _randomize(model, generator, 1.0)
    _randomize(model.dec, generator, 1.0)
    state = {k: v for k, v in model.state_dict().items() if k != "codebook.embed"}
    embed = torch.randn(1024, 768, generator=generator)
    state.update({"quantizer.vq.layers.0._codebook.inited": torch.tensor([1.0]),
                  "quantizer.vq.layers.0._codebook.cluster_size": torch.ones(1024),
                  "quantizer.vq.layers.0._codebook.embed": embed,
                  "quantizer.vq.layers.0._codebook.embed_avg": embed.clone()})
    state = _weight_norm_split(state)
    weights = {k: v.half() for k, v in state.items()}
    checkpoints.save_sovits(path, {"weight": weights, "config": hps, "info": "random"}, version)


EOS_LOGIT = -100.0


def _never_eos(model: Text2Semantic, eos: int) -> None:
    """Random weights would stop at random: make EOS's logit a constant EOS_LOGIT, far
    below every other token's, so a random voice never says it and its lengths are
    whatever the caller's token limit says. Channel 0 of the last layer's output is made
    a constant 1 (norm weight 0, bias 1) and only that channel feeds EOS's row."""
    with torch.no_grad():
        norm = model.h.layers[-1].norm2
        norm.weight[0], norm.bias[0] = 0.0, 1.0
        row = model.ar_predict_layer.weight[eos]
        row.zero_()
        row[0] = EOS_LOGIT


def write_gpt(path: Path, generator: torch.Generator, max_sec: float, version: str = "v2",
              size: str = "tiny") -> None:
    phonemes = 512 if version == "v1" else checkpoints.V2_SYMBOLS  # GPT-SoVITS's v1 GPT has 512 rows
    # full: upstream's s1longer-v2.yaml
    width, heads, layers = (64, 2, 2) if size == "tiny" else (512, 16, 24)
    config = {"model": {"vocab_size": 1025, "phoneme_vocab_size": phonemes, "embedding_dim": width,
                        "hidden_dim": width, "head": heads, "linear_units": 4 * width, "n_layer": layers, "dropout": 0,
                        "EOS": 1024, "random_bert": 0},
              "data": {"max_eval_sample": 8, "max_sec": max_sec, "num_workers": 4, "pad_val": 1024},
              "train": {"seed": 1234, "epochs": 1, "batch_size": 8, "precision": "16-mixed"},
              "optimizer": {"lr": 0.01}, "inference": {"top_k": 15}}
    model = Text2Semantic(T2SConfig.from_checkpoint_config(config))
    _randomize(model, generator, 1.0)
    _never_eos(model, config["model"]["EOS"])
    weights = {"model." + k: v.half() for k, v in model.state_dict().items()}
    torch.save({"weight": weights, "config": config, "info": "GPT-e1"}, path)


def write_hubert(directory: Path, seed: int, size: str = "tiny") -> None:
    from transformers import HubertConfig, HubertModel

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if size == "tiny":
        config = HubertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              conv_dim=(32,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=16,
                              feat_extract_norm="group", do_stable_layer_norm=False)
    else:  # HuBERT-base: 12 layers x 768, 12 heads, 512-channel feature encoder
        config = HubertConfig(feat_extract_norm="group", do_stable_layer_norm=False)
    model = HubertModel(config).eval()
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        state[key] = value.contiguous()
    _save_pretrained(model, config, directory, state, size)
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000}))


BERT_LARGE_VOCAB = 21128  # chinese-roberta-wwm-ext-large's vocabulary size


def write_bert(directory: Path, seed: int, size: str = "tiny") -> None:
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_VOCAB_CHARS))
    if size == "full":  # the real table's size (its memory), filled with unused entries
        vocab += [f"[unused{i}]" for i in range(BERT_LARGE_VOCAB - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True, handle_chinese_chars=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    torch.manual_seed(seed)
    if size == "tiny":
        config = BertConfig(vocab_size=len(vocab), hidden_size=1024, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=512)
    else:  # BERT-large
        config = BertConfig(vocab_size=len(vocab), hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096, max_position_embeddings=512)
    model = BertForMaskedLM(config).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # GPT-SoVITS reads these two by name from the file, as the real model has them.
    state["bert.embeddings.position_ids"] = torch.arange(config.max_position_embeddings).unsqueeze(0)
    state.setdefault("cls.predictions.decoder.weight", state["bert.embeddings.word_embeddings.weight"])
    state.setdefault("cls.predictions.decoder.bias", state["cls.predictions.bias"])
    state.pop("bert.embeddings.token_type_ids", None)
    _save_pretrained(model, config, directory, state, size)


def write_sv(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = speaker.ERes2NetV2()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=generator))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=generator))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, path)


def write_pretrained(root: Path, with_sv: bool, seed: int = 0, size: str = "tiny") -> Path:
    """The shared pretrained directory; existing models are kept."""
    if not (root / features.HUBERT_DIR / "config.json").is_file():
        write_hubert(root / features.HUBERT_DIR, seed, size)
    if not (root / features.BERT_DIR / "config.json").is_file():
        write_bert(root / features.BERT_DIR, seed + 1, size)
    if with_sv and not (root / speaker.SV_FILE).is_file():
        write_sv(root / speaker.SV_FILE, seed + 2)
    return root


def reference_clip(seconds: float = 3.2, rate: int = 32000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a gliding harmonic tone with syllable-like bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t)) ** 2
    signal = 0.15 * tone * envelope + 0.01 * rng.standard_normal(t.shape)
    return (signal / np.max(np.abs(signal)) * 0.6).astype(np.float32)


def pretrained_dirname(size: str) -> str:
    """Tiny and full voices in one voices directory each share the pretrained models of their size."""
    return PRETRAINED_DIRNAME if size == "tiny" else f"{PRETRAINED_DIRNAME}-{size}"


def write_random_gsv_voice(voices_dir: Path, name: str, version: str = "v2", seed: int = 0,
                           max_sec: float = 2.0, size: str = "tiny", lora: bool = False) -> Path:
    """Write voice `name` under `voices_dir`; returns its directory. `size`: tiny (tests) or
    full (the released models' dimensions); v3/v4 voices may be a LoRA file over a base
    model in the pretrained folder (`lora`)."""
    import soundfile

    if version not in ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"):
        raise ValueError(f"random GPT-SoVITS voices come in v1, v2, v2Pro, v2ProPlus, v3 or v4, not {version!r}")
    if size not in SIZES:
        raise ValueError(f"random GPT-SoVITS voices come in sizes {', '.join(SIZES)}, not {size!r}")
    directory = Path(voices_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    pretrained_name = pretrained_dirname(size)
    pretrained = write_pretrained(Path(voices_dir) / pretrained_name, with_sv=version in ("v2Pro", "v2ProPlus"),
                                  seed=seed, size=size)
    generator = torch.Generator().manual_seed(seed)
    write_gpt(directory / f"{name}-e15.ckpt", generator, max_sec, version if version != "v4" else "v3", size)
    steps = ""
    if version in ("v3", "v4"):
        from voxpipe.stages.families.gpt_sovits import random_voice_v3 as v3

        v3.write_vocoder(pretrained, version, size, seed)
        if lora:
            v3.write_base(pretrained, version, size, seed)
            v3.write_lora(directory / f"{name}_e8_s96.pth", version, size, generator)
        else:
            v3.write_full(directory / f"{name}_e8_s96.pth", version, size, generator)
        steps = f"sample_steps = {8 if version == 'v4' else 32}\n"
    else:
        write_sovits(directory / f"{name}_e8_s96.pth", version, generator, size)
    soundfile.write(str(directory / "reference.wav"), reference_clip(seed=seed), 32000, subtype="FLOAT")
    (directory / "voice.toml").write_text(
        f'# A random-weight GPT-SoVITS voice for tests ({size} size, seed {seed}).\n'
        f'family = "gpt-sovits"\nversion = "{version}"\n'
        f'gpt = "{name}-e15.ckpt"\nsovits = "{name}_e8_s96.pth"\n'
        f'pretrained_dir = "../{pretrained_name}"\n\n'
        f'[reference]\naudio = "reference.wav"\ntext = "{REFERENCE_TEXT}"\nlanguage = "{REFERENCE_LANG}"\n\n'
        f'[defaults]\ntop_k = 15\ntop_p = 1.0\ntemperature = 1.0\nrepetition_penalty = 1.35\nnoise_scale = 0.5\n'
        f'{steps}',
        encoding="utf-8")
    return directory
