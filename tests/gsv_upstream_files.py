"""GPT-SoVITS files laid out the way upstream ships and writes them, for loading tests.

- `pretrained_as_shipped`: HuBERT and BERT folders whose config.json carries upstream's
  fields, `"torch_dtype": "float16"` among them, with fp16 weights (as the released
  `chinese-hubert-base` and `chinese-roberta-wwm-ext-large` are).
- `save_sovits_as_trainer`: a SoVITS `.pth` whose config is upstream's `utils.HParams`
  object (nested HParams for sections), weights fp16 without `enc_q`, plus the version tag
  for Pro models, as its trainer's `savee` writes it.
- `save_base_gpt`: a GPT checkpoint laid out like upstream's pretrained `s1` files: fp32
  `model.*` weights, a training config with its optimizer and train sections, and
  training bookkeeping beside them.
"""
from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch

from voxpipe.stages.families.gpt_sovits.models import features

# Fields upstream's config.json files carry beyond what transformers writes for a fresh config.
_UPSTREAM_FIELDS = {
    features.HUBERT_DIR: {"_name_or_path": "TencentGameMate/chinese-hubert-base", "architectures": ["HubertModel"],
                          "torch_dtype": "float16", "transformers_version": "4.30.2"},
    features.BERT_DIR: {"_name_or_path": "hfl/chinese-roberta-wwm-ext-large", "architectures": ["BertForMaskedLM"],
                        "directionality": "bidi", "output_past": True, "pooler_fc_size": 768,
                        "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3, "pooler_size_per_head": 128,
                        "pooler_type": "first_token_transform", "torch_dtype": "float16",
                        "transformers_version": "4.30.2"},
}


def pretrained_as_shipped(root: Path) -> Path:
    """Rewrite the HuBERT and BERT folders under `root` as upstream ships them."""
    for name, fields in _UPSTREAM_FIELDS.items():
        folder = root / name
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config.pop("dtype", None)
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                   folder / "pytorch_model.bin")
    return root


def _upstream_hparams_class() -> type:
    """A class pickled as `utils.HParams`, built like upstream's (nested dicts become HParams)."""
    class HParams:
        def __init__(self, **kwargs: Any) -> None:
            for key, value in kwargs.items():
                setattr(self, key, HParams(**value) if isinstance(value, dict) else value)

    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    return HParams


def _plain(value: Any) -> Any:
    if type(value).__name__ == "HParams":
        value = value.__dict__
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_sovits_as_trainer(source: Path, target: Path, edit: Callable[[dict], None] | None = None) -> None:
    """Re-save a SoVITS `.pth` as upstream's trainer does: the HParams object, fp16, tag;
    `edit` may change the config (a plain dict) first."""
    data = source.read_bytes()
    head = data[:2]
    module = types.ModuleType("utils")
    module.HParams = hparams = _upstream_hparams_class()
    sys.modules["utils"] = module  # the source may hold an HParams object already
    try:
        obj = torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=False)
        config = _plain(obj["config"])
        if edit is not None:
            edit(config)
        saved = {"weight": {k: v.half() for k, v in obj["weight"].items() if "enc_q" not in k},
                 "config": hparams(**config), "info": "8epoch_96iteration"}
        buffer = io.BytesIO()
        torch.save(saved, buffer)
    finally:
        del sys.modules["utils"]
    out = buffer.getvalue()
    target.write_bytes(head + out[2:] if head != b"PK" else out)


def save_base_gpt(source: Path, target: Path) -> None:
    """Re-save a GPT `.ckpt` as upstream's pretrained s1 files are laid out."""
    obj = torch.load(source, map_location="cpu", weights_only=True)
    config = obj["config"]
    config["train"].update({"precision": 32, "gradient_clip": 1.0, "save_every_n_epoch": 1})
    config["optimizer"].update({"lr_init": 0.00001, "lr_end": 0.0001, "warmup_steps": 2000, "decay_steps": 40000})
    torch.save({"weight": {k: v.float() for k, v in obj["weight"].items()}, "config": config,
                "epoch": 12, "global_step": 369668}, target)
