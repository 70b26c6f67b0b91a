"""Build a VitsModel from a Piper .onnx alone: weights from its initializers, hyperparameters
from their shapes (and from convolution attributes where shapes cannot tell).

Piper's export keeps most parameter names, but not all of them:
- weight-normalised convolutions (the flow's WaveNet layers) are folded into anonymous
  constants such as `onnx::Conv_8168`; the Conv node's scope name (`/flow/flows.6/enc/in_layers.0/Conv`)
  says whose weight it is;
- the token embedding can carry a graph input's name (`sid` in single-speaker voices);
  it is the table that the `input` ids index;
- the duration predictor's affine flow keeps `m` but its `logs` is folded into exp(-logs).
Graphs from older exporters have no scope names; there a conv's named bias identifies it,
and strides and dilations fall back to the values every Piper generator uses.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxpipe.stages.engines.base import EngineError
from voxpipe.stages.families.piper.vits.model import VitsConfig, VitsModel

_COUNT_RE = r"{prefix}\.(\d+)\."
_PREFIXES = ("enc_p", "dp", "flow", "dec", "emb_g")


class WeightSource:
    """Named numpy weights of one .onnx plus the attributes of its Conv nodes by module path."""

    def __init__(self, weights: dict[str, np.ndarray], conv_attrs: dict[str, dict[str, Any]]) -> None:
        self.weights = weights
        self.conv_attrs = conv_attrs

    def has(self, name: str) -> bool:
        return name in self.weights

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.weights[name].shape)

    def count(self, prefix: str) -> int:
        pattern = re.compile(_COUNT_RE.format(prefix=re.escape(prefix)))
        found = {int(m.group(1)) for key in self.weights if (m := pattern.match(key))}
        return max(found) + 1 if found else 0

    def indices(self, prefix: str) -> list[int]:
        pattern = re.compile(_COUNT_RE.format(prefix=re.escape(prefix)))
        return sorted({int(m.group(1)) for key in self.weights if (m := pattern.match(key))})

    def attr(self, module: str, name: str, default: Any) -> Any:
        return self.conv_attrs.get(module, {}).get(name, default)


def _scope_to_module(node_name: str) -> str | None:
    """'/flow/flows.6/enc/in_layers.0/Conv' -> 'flow.flows.6.enc.in_layers.0'."""
    if not node_name.startswith("/"):
        return None
    parts = node_name.strip("/").split("/")
    return ".".join(parts[:-1]) or None


def read_onnx_weights(path: Path) -> WeightSource:
    """Collect parameters under their PyTorch names from a Piper .onnx (raises on bad files)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def take(tensor_name: str) -> np.ndarray | None:
        t = inits.get(tensor_name)
        return None if t is None else numpy_helper.to_array(t)

    for name, tensor in inits.items():
        if name.split(".")[0] in _PREFIXES:
            arrays[name] = numpy_helper.to_array(tensor)

    conv_attrs: dict[str, dict[str, Any]] = {}
    affine_consts: list[str] = []
    for node in graph.node:
        module = _scope_to_module(node.name)
        if node.op_type in ("Conv", "ConvTranspose"):
            # Older exporters leave nodes unscoped; a named bias still says whose conv it is.
            bias = node.input[2] if len(node.input) > 2 else ""
            if not module and bias.endswith(".bias") and bias in inits:
                module = bias[: -len(".bias")]
            if module:
                conv_attrs[module] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                for slot, suffix in ((1, "weight"), (2, "bias")):
                    if len(node.input) > slot and f"{module}.{suffix}" not in arrays:
                        value = take(node.input[slot])
                        if value is not None:
                            arrays[f"{module}.{suffix}"] = value
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in inits:
            # Embedding tables are identified by what indexes them, whatever their names.
            if node.input[1] == "input" and "enc_p.emb.weight" not in arrays:
                arrays["enc_p.emb.weight"] = take(node.input[0])  # type: ignore[assignment]
            elif node.input[1] == "sid" and "emb_g.weight" not in arrays:
                arrays["emb_g.weight"] = take(node.input[0])  # type: ignore[assignment]
        elif node.op_type == "Mul" and module == "dp.flows.0":
            affine_consts.extend(n for n in node.input if n in inits and n != "dp.flows.0.m")

    if "dp.flows.0.m" in arrays and "dp.flows.0.logs" not in arrays:
        # Inference multiplies by exp(-logs), which constant folding stores instead of logs:
        # the constant its Mul reads, or (unscoped graphs) the one unnamed tensor of m's shape.
        shape = arrays["dp.flows.0.m"].shape
        candidates = list(dict.fromkeys(affine_consts)) or [
            name for name, t in inits.items()
            if name.split(".")[0] not in _PREFIXES and tuple(t.dims) == shape and t.data_type == 1]
        scales = [v for v in map(take, candidates) if v is not None and v.shape == shape]
        if len(scales) != 1:
            raise ValueError("duration predictor: cannot find the affine flow's scale")
        arrays["dp.flows.0.logs"] = (-np.log(scales[0].astype(np.float64))).astype(np.float32)
    return WeightSource(arrays, conv_attrs)


def infer_config(src: WeightSource, num_speakers_hint: int = 1) -> VitsConfig:
    """Hyperparameters from weight shapes; strides/dilations from the Conv nodes."""
    n_vocab, hidden = src.shape("enc_p.emb.weight")
    rel = src.shape("enc_p.encoder.attn_layers.0.emb_rel_k")  # [heads or 1, 2w+1, k_channels]
    ffn = src.shape("enc_p.encoder.ffn_layers.0.conv_1.weight")
    cfg: dict[str, Any] = dict(
        n_vocab=n_vocab,
        hidden_channels=hidden,
        inter_channels=src.shape("enc_p.proj.weight")[0] // 2,
        filter_channels=ffn[0],
        kernel_size=ffn[2],
        n_layers=src.count("enc_p.encoder.attn_layers"),
        window_size=(rel[1] - 1) // 2,
        n_heads=hidden // rel[2],
        heads_share=rel[0] == 1,
    )

    if src.has("dp.flows.0.m"):
        flows = [i for i in src.indices("dp.flows") if i % 2 == 1]
        cfg.update(use_sdp=True, dp_filter_channels=src.shape("dp.pre.weight")[0],
                   dp_kernel_size=src.shape("dp.convs.convs_sep.0.weight")[2],
                   dp_n_layers=src.count("dp.convs.convs_sep"),
                   dp_n_flows=max(flows) // 2 + 1 if flows else 1)
        if flows:
            bins_total = src.shape(f"dp.flows.{flows[0]}.proj.weight")[0]
            cfg["dp_num_bins"] = (bins_total + 1) // 3
            cfg["dp_flow_layers"] = src.count(f"dp.flows.{flows[0]}.convs.convs_sep")
    else:
        conv_1 = src.shape("dp.conv_1.weight")
        cfg.update(use_sdp=False, dp_filter_channels=conv_1[0], dp_kernel_size=conv_1[2])

    couplings = src.indices("flow.flows")
    in_layer = src.shape(f"flow.flows.{couplings[0]}.enc.in_layers.0.weight")
    n_wn = src.count(f"flow.flows.{couplings[0]}.enc.in_layers")
    dilation = 1
    if n_wn > 1:
        dilation = int(src.attr(f"flow.flows.{couplings[0]}.enc.in_layers.1", "dilations", [1])[0])
    cfg.update(flow_hidden_channels=src.shape(f"flow.flows.{couplings[0]}.pre.weight")[0],
               flow_kernel_size=in_layer[2], flow_n_layers=n_wn, flow_dilation_rate=dilation,
               flow_n_flows=len(couplings))

    n_ups = src.count("dec.ups")
    up_kernels = tuple(src.shape(f"dec.ups.{i}.weight")[2] for i in range(n_ups))
    # Strides are not in any shape; Piper's generators all use kernel = 2 * rate.
    rates = tuple(int(src.attr(f"dec.ups.{i}", "strides", [k // 2])[0]) for i, k in enumerate(up_kernels))
    n_blocks = src.count("dec.resblocks")
    per_stage = n_blocks // n_ups
    block_type = "1" if src.has("dec.resblocks.0.convs1.0.weight") else "2"
    conv_list = "convs1" if block_type == "1" else "convs"
    kernels = tuple(src.shape(f"dec.resblocks.{j}.{conv_list}.0.weight")[2] for j in range(per_stage))
    default_dil = [(1, 3, 5)] * per_stage if block_type == "1" else [(1, 2), (2, 6), (3, 12)][:per_stage]
    dilations = []
    for j in range(per_stage):
        n_convs = src.count(f"dec.resblocks.{j}.{conv_list}")
        fallback = default_dil[j] if j < len(default_dil) else (1,) * n_convs
        dilations.append(tuple(int(src.attr(f"dec.resblocks.{j}.{conv_list}.{c}", "dilations",
                                            [fallback[c] if c < len(fallback) else 1])[0])
                               for c in range(n_convs)))
    pre = src.shape("dec.conv_pre.weight")
    cfg.update(resblock=block_type, resblock_kernel_sizes=kernels, resblock_dilation_sizes=tuple(dilations),
               upsample_rates=rates, upsample_initial_channel=pre[0], upsample_kernel_sizes=up_kernels,
               pre_kernel_size=pre[2], post_kernel_size=src.shape("dec.conv_post.weight")[2],
               post_bias=src.has("dec.conv_post.bias"))

    if src.has("emb_g.weight"):
        n_speakers, gin = src.shape("emb_g.weight")
        cfg.update(n_speakers=n_speakers, gin_channels=gin)
    elif src.has("dec.cond.weight"):
        cfg.update(n_speakers=max(num_speakers_hint, 1), gin_channels=src.shape("dec.cond.weight")[1])
    return VitsConfig(**cfg)


def _check_padding(src: WeightSource, model: VitsModel) -> None:
    """Conv paddings the model assumes must match the graph's (catches odd architectures)."""
    for name, module in model.named_modules():
        pads = src.attr(name, "pads", None)
        if pads is None or not isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            continue
        ours = module.padding[0] if isinstance(module.padding, tuple) else None
        if ours is not None and ours > 0 and list(pads) != [ours, ours]:
            raise ValueError(f"{name}: graph pads {list(pads)} != {ours}")


def load_piper_onnx(path: Path, voice_name: str | None = None, num_speakers_hint: int = 1) -> VitsModel:
    """The eval-mode VitsModel for a Piper .onnx; EngineError naming the voice on failure."""
    label = voice_name or Path(path).stem
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"voice {label!r}: model file {path} not found")
    try:
        src = read_onnx_weights(path)
    except Exception as exc:  # onnx raises DecodeError and friends for corrupt files
        raise EngineError(f"voice {label!r}: cannot read {path.name}: {exc}") from exc
    try:
        cfg = infer_config(src, num_speakers_hint)
        model = VitsModel(cfg)
        expected = model.state_dict()
        missing = [k for k in expected if k not in src.weights]
        if missing:
            raise ValueError(f"missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        state = {k: torch.from_numpy(np.array(src.weights[k], dtype=np.float32)) for k in expected}
        bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
               if v.shape != expected[k].shape]
        if bad:
            raise ValueError(f"shape mismatch {bad[:3]}")
        model.load_state_dict(state, strict=True)
        _check_padding(src, model)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"voice {label!r}: {path.name} is not a loadable Piper VITS model: {exc}") from exc
    model.dec.channels_last_weights()
    return model.eval()


def unused_weights(src: WeightSource, model: VitsModel) -> list[str]:
    """Named weights in the file that the model does not use (diagnostics)."""
    keys = set(model.state_dict())
    return sorted(k for k in src.weights if k not in keys)

