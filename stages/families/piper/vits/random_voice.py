"""Tiny random-weight Piper voices for tests: Piper's structure at toy widths, written the
way Piper ships voices (`NAME/NAME.onnx` + `NAME/NAME.onnx.json`)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from voxpipe.stages.families.piper.vits.export import export_piper
from voxpipe.stages.families.piper.vits.model import VitsConfig, VitsModel


def tiny_config(num_speakers: int = 1, n_vocab: int = 256) -> VitsConfig:
    return VitsConfig(
        n_vocab=n_vocab, inter_channels=8, hidden_channels=16, filter_channels=32, n_heads=2, n_layers=2,
        kernel_size=3, window_size=4, dp_filter_channels=16, dp_kernel_size=3, dp_n_layers=3, dp_n_flows=4,
        flow_hidden_channels=16, flow_kernel_size=5, flow_n_layers=2, flow_n_flows=4,
        resblock="2", resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
        upsample_rates=(8, 8, 4), upsample_initial_channel=32, upsample_kernel_sizes=(16, 16, 8),
        n_speakers=num_speakers, gin_channels=8 if num_speakers > 1 else 0)


@torch.no_grad()
def random_model(cfg: VitsConfig, seed: int = 0) -> VitsModel:
    """A VitsModel with small random weights that still yields sane durations and audio."""
    torch.manual_seed(seed)
    model = VitsModel(cfg).eval()
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            # Not all ones: the exporter merges identical initializers, losing their names.
            param.normal_(1.0, 0.02)
        elif name.endswith(("beta", "bias", ".m", ".logs")):
            param.normal_(0.0, 0.02)
        else:
            fan_in = param[0].numel() if param.dim() > 1 else 1
            param.normal_(0.0, 0.5 / max(fan_in, 1) ** 0.5)
    return model


def _config_json(cfg: VitsConfig, sample_rate: int, num_speakers: int, name: str) -> dict:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return {
        "audio": {"sample_rate": sample_rate, "quality": "x_low"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()},
        "num_symbols": cfg.n_vocab,
        "num_speakers": num_speakers,
        "speaker_id_map": {f"speaker_{i}": i for i in range(num_speakers)} if num_speakers > 1 else {},
        "piper_version": "1.0.0",
        "language": {"code": "en_US"},
        "dataset": name,
    }


# One exported graph per structure: every parameter is an initializer named after it, so a
# voice with other weights is the same graph with its initializers replaced — milliseconds,
# where a fresh export takes seconds.
_GRAPHS: dict[tuple[int, int], bytes] = {}


def _reweighted(graph: bytes, model: VitsModel) -> bytes | None:
    """`graph` with `model`'s weights, or None where its initializers are not exactly the
    model's parameters (then the caller exports afresh)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    proto = onnx.load_from_string(graph)
    params = {name: p.detach().numpy() for name, p in model.named_parameters()}
    if {init.name for init in proto.graph.initializer} != set(params):
        return None
    for init in proto.graph.initializer:
        value = params[init.name]
        if tuple(init.dims) != value.shape:
            return None
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    return proto.SerializeToString()


def _piper_graph(model: VitsModel, num_speakers: int) -> bytes:
    key = (num_speakers, model.cfg.n_vocab)
    if key in _GRAPHS:
        graph = _reweighted(_GRAPHS[key], model)
        if graph is not None:
            return graph
    with tempfile.TemporaryDirectory() as tmp:
        path = export_piper(model, Path(tmp) / "voice.onnx")
        graph = path.read_bytes()
    _GRAPHS[key] = graph
    return graph


def write_random_piper_voice(directory: Path, name: str, *, seed: int = 0, num_speakers: int = 1,
                             sample_rate: int = 16000) -> Path:
    """Write `directory/name/name.onnx` (+ .onnx.json); returns the .onnx path."""
    cfg = tiny_config(num_speakers)
    model = random_model(cfg, seed)
    voice_dir = Path(directory) / name
    voice_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = voice_dir / f"{name}.onnx"
    onnx_path.write_bytes(_piper_graph(model, num_speakers))
    config = _config_json(cfg, sample_rate, num_speakers, name)
    (voice_dir / f"{name}.onnx.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return onnx_path
