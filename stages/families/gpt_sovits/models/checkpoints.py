"""GPT-SoVITS checkpoint files as users have them, read without converting.

- GPT (`.ckpt`): a torch pickle `{"weight": {"model.*": fp16}, "config": {...}, "info": ...}`.
- SoVITS (`.pth`): a torch zip `{"weight": {...fp16, weight-norm pairs...}, "config": HParams,
  "info": ...}`. v2Pro/v2ProPlus files carry a two-byte version tag ("05"/"06") where the
  zip magic "PK" belongs; "00"/"01" tag v1/v2; "02".."04" are v3/v4.

Loading never runs arbitrary pickled code: torch's weights-only unpickler with one extra
allowed class, a stand-in for GPT-SoVITS's `utils.HParams` (a dict-like config object).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

SUPPORTED_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
VERSION_TAGS = {b"00": "v1", b"01": "v2", b"05": "v2Pro", b"06": "v2ProPlus"}
TAG_OF_VERSION = {"v2Pro": b"05", "v2ProPlus": b"06"}
MEL_TAGS = {b"02": "v3", b"03": "v3", b"04": "v4"}  # read by sovits_v3.py, not here
V1_SYMBOLS, V2_SYMBOLS = 322, 732


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and why."""


class HParams:
    """Stand-in for GPT-SoVITS's `utils.HParams`: attributes, readable like a dict."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()


HParams.__module__ = "utils"  # how the class is named inside users' pickles


def _load(data: bytes, name: str) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([HParams]):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{name}: not a readable GPT-SoVITS checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("weight"), dict) or "config" not in obj:
        raise CheckpointError(f"{name}: expected a GPT-SoVITS checkpoint with 'weight' and 'config'")
    return obj


def to_plain(value: Any) -> Any:
    """HParams/dicts -> plain nested dicts (for configs)."""
    if isinstance(value, HParams):
        value = value.__dict__
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def fold_weight_norm(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """fp32 copies of all tensors, with every weight-norm pair (`weight_g`/`weight_v`, or
    the parametrization form) folded into a plain `weight`."""
    out: dict[str, Tensor] = {}
    for key, value in weights.items():
        if not isinstance(value, Tensor):
            continue
        value = value.float()
        if key.endswith(".weight_g") or key.endswith(".parametrizations.weight.original0"):
            continue
        if key.endswith(".weight_v"):
            base = key[: -len(".weight_v")]
            out[base + ".weight"] = torch._weight_norm(value, weights[base + ".weight_g"].float(), 0)
        elif key.endswith(".parametrizations.weight.original1"):
            base = key[: -len(".parametrizations.weight.original1")]
            g = weights[base + ".parametrizations.weight.original0"].float()
            out[base + ".weight"] = torch._weight_norm(value, g, 0)
        else:
            out[key] = value
    return out


def load_gpt(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """GPT checkpoint -> (config as plain dict, fp32 weights)."""
    obj = _load(_read(path), path.name)
    config = to_plain(obj["config"])
    if "model" not in config or "data" not in config:
        raise CheckpointError(f"{path.name}: GPT config lacks 'model'/'data'")
    return config, {k: v.float() for k, v in obj["weight"].items() if isinstance(v, Tensor)}


def sovits_version(head: bytes, weights: dict[str, Tensor], name: str) -> str:
    """The model version from the file's tag, else (plain zip files) from the weights."""
    if head in MEL_TAGS:
        raise CheckpointError(f"{name}: a SoVITS {MEL_TAGS[head]} checkpoint; say version = \"{MEL_TAGS[head]}\" "
                              "in voice.toml (or leave version out)")
    if head in VERSION_TAGS and VERSION_TAGS[head] in ("v2Pro", "v2ProPlus"):
        return VERSION_TAGS[head]
    embedding = weights.get("enc_p.text_embedding.weight")
    if embedding is None or any(k.startswith(("cfm.", "bridge.")) for k in weights):
        raise CheckpointError(f"{name}: looks like a SoVITS v3/v4 checkpoint (no phone embedding / a CFM "
                              "module); say version = \"v3\" or \"v4\" in voice.toml")
    if "sv_emb.weight" in weights:
        return "v2Pro"  # a Pro model saved as a plain zip; v2Pro and v2ProPlus run alike
    return "v1" if embedding.shape[0] == V1_SYMBOLS else "v2"


def load_sovits(path: Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """SoVITS checkpoint -> (version, config as plain dict, fp32 folded weights)."""
    data = _read(path)
    head = data[:2]
    if head != b"PK":
        if head in MEL_TAGS:
            sovits_version(head, {}, path.name)
        if head not in VERSION_TAGS:
            raise CheckpointError(f"{path.name}: unknown SoVITS file header {head!r}")
        data = b"PK" + data[2:]
    obj = _load(data, path.name)
    version = sovits_version(head, obj["weight"], path.name)
    config = to_plain(obj["config"])
    for section in ("model", "data"):
        if section not in config:
            raise CheckpointError(f"{path.name}: SoVITS config lacks '{section}'")
    return version, config, fold_weight_norm(obj["weight"])


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def load_exact(model: ModuleT, state: dict[str, Tensor], what: str) -> ModuleT:
    """Load every tensor `model` has from `state` (extra entries ignored), in eval mode;
    KeyError naming `what` ("GPT checkpoint") and the first missing or misshapen tensors."""
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise KeyError(f"{what} lacks {len(missing)} tensors, e.g. {', '.join(missing[:4])}")
    bad = [k for k in wanted if tuple(state[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise KeyError(f"{what} tensors have unexpected shapes: "
                       + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(wanted[k].shape)}" for k in bad[:4]))
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return model.eval()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def save_sovits(path: Path, checkpoint: dict[str, Any], version: str) -> None:
    """Write a SoVITS checkpoint the way GPT-SoVITS does (Pro versions get their tag)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    if version in TAG_OF_VERSION:
        data = TAG_OF_VERSION[version] + data[2:]
    path.write_bytes(data)
