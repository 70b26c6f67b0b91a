"""A Piper voice's one-piece graph made to take its noise as inputs, cached on disk.

Piper's graph draws its two noises itself (RandomNormalLike ops), so a seed cannot reach
it. This rewrites the graph with the `onnx` package alone (no torch): each random op
becomes a slice of a new input, `dp_noise` [batch, 2, phonemes] for the duration
predictor and `z_noise` [batch, channels, noise_frames] for the prior, which the engine
draws from the chunk's seed (stages/families/piper/noise.py), the same arrays the split
graphs and the torch engine use. Slicing keeps the first frames of `z_noise` (the prior's
noise is drawn frame by frame, so they do not depend on how many were drawn); a `z_noise`
narrower than the frames is zero-padded, and the graph's second output, `frames`, tells
the caller to draw again. The int8 model is quantized from this graph, so it replays too.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from voxpipe.procutil import exclusive_lock

if TYPE_CHECKING:
    import onnx

# Bump when the rewritten graph changes meaning: older cached files are then ignored.
SEEDED_FORMAT = 1
RANDOM_OPS = ("RandomNormalLike", "RandomNormal")
DURATION_INPUT, LATENT_INPUT, FRAMES_OUTPUT = "dp_noise", "z_noise", "frames"


class SeedingError(Exception):
    """The graph cannot be given noise inputs (no onnx package, or not a Piper graph)."""


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/voxpipe/vits-parts (or ~/.cache/...), beside the split graphs."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "voxpipe" / "vits-parts"


def _digest(model_path: Path) -> str:
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _latent_channels(model: onnx.ModelProto) -> int:
    """The prior's channels: half the text encoder's projection, or the vocoder's input."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    if "enc_p.proj.bias" in dims:
        return int(dims["enc_p.proj.bias"][0]) // 2
    if "dec.conv_pre.weight" in dims:
        return int(dims["dec.conv_pre.weight"][1])
    raise SeedingError("cannot tell the latent channels (no enc_p.proj.bias or dec.conv_pre.weight)")


def _ancestors(model: onnx.ModelProto, tensor: str) -> set[str]:
    """Every tensor that `tensor` is computed from."""
    producer = {out: node for node in model.graph.node for out in node.output}
    seen: set[str] = set()
    todo = [tensor]
    while todo:
        node = producer.get(todo.pop())
        for name in node.input if node is not None else ():
            if name and name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def seed_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite `model` in place: its random ops read `dp_noise` / `z_noise`, and it gains
    the output `frames` (the prior's width). Raises SeedingError on an unknown graph."""
    from onnx import TensorProto, helper

    graph = model.graph
    randoms = [n for n in graph.node if n.op_type in RANDOM_OPS]
    if not randoms or len(randoms) > 2:
        raise SeedingError(f"expected one or two random ops (duration, prior), found {len(randoms)}")
    # The prior's noise is shaped by the durations, so it is drawn downstream of the
    # duration noise; a voice without the stochastic duration predictor has the prior's alone.
    if len(randoms) == 2:
        first, second = randoms
        if first.output[0] in _ancestors(model, second.input[0] if second.input else second.output[0]):
            duration, prior = first, second
        elif second.output[0] in _ancestors(model, first.input[0] if first.input else first.output[0]):
            duration, prior = second, first
        else:
            raise SeedingError("cannot tell the duration noise from the prior's")
    else:
        duration, prior = None, randoms[0]
    channels = _latent_channels(model)

    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # random op's output -> the nodes replacing it
    frames_tensor = ""
    for op, source in ((duration, DURATION_INPUT), (prior, LATENT_INPUT)):
        if op is None:
            continue
        tag = f"/seeded/{source}"
        attrs = {a.name: helper.get_attribute_value(a) for a in op.attribute}
        nodes: list[onnx.NodeProto] = []
        if op.op_type == "RandomNormalLike":
            nodes.append(helper.make_node("Shape", [op.input[0]], [f"{tag}/shape"], name=f"{tag}/Shape"))
        else:
            shape = helper.make_tensor(f"{tag}/shape_value", TensorProto.INT64, [len(attrs["shape"])], attrs["shape"])
            nodes.append(helper.make_node("Constant", [], [f"{tag}/shape"], name=f"{tag}/Shape", value=shape))
        zero = helper.make_tensor(f"{tag}/zero", TensorProto.FLOAT, [1], [0.0])
        axis2 = helper.make_tensor(f"{tag}/axis2", TensorProto.INT64, [1], [2])
        start = helper.make_tensor(f"{tag}/start", TensorProto.INT64, [1], [0])
        nodes += [
            helper.make_node("ConstantOfShape", [f"{tag}/shape"], [f"{tag}/zeros"], name=f"{tag}/Zeros", value=zero),
            helper.make_node("Concat", [source, f"{tag}/zeros"], [f"{tag}/padded"], name=f"{tag}/Concat", axis=2),
            helper.make_node("Constant", [], [f"{tag}/axis"], name=f"{tag}/Axis", value=axis2),
            helper.make_node("Constant", [], [f"{tag}/start"], name=f"{tag}/Start", value=start),
            helper.make_node("Gather", [f"{tag}/shape", f"{tag}/axis"], [f"{tag}/width"], name=f"{tag}/Width", axis=0),
        ]
        drawn = f"{tag}/noise"
        nodes.append(helper.make_node("Slice", [f"{tag}/padded", f"{tag}/start", f"{tag}/width", f"{tag}/axis"],
                                      [drawn], name=f"{tag}/Slice"))
        scale, mean = float(attrs.get("scale", 1.0)), float(attrs.get("mean", 0.0))
        if scale != 1.0:
            value = helper.make_tensor(f"{tag}/scale_value", TensorProto.FLOAT, [1], [scale])
            nodes += [helper.make_node("Constant", [], [f"{tag}/scale"], name=f"{tag}/Scale", value=value),
                      helper.make_node("Mul", [drawn, f"{tag}/scale"], [f"{tag}/scaled"], name=f"{tag}/Mul")]
            drawn = f"{tag}/scaled"
        if mean != 0.0:
            value = helper.make_tensor(f"{tag}/mean_value", TensorProto.FLOAT, [1], [mean])
            nodes += [helper.make_node("Constant", [], [f"{tag}/mean"], name=f"{tag}/Mean", value=value),
                      helper.make_node("Add", [drawn, f"{tag}/mean"], [f"{tag}/shifted"], name=f"{tag}/Add")]
            drawn = f"{tag}/shifted"
        dtype = int(attrs.get("dtype", TensorProto.FLOAT))
        nodes.append(helper.make_node("Cast", [drawn], [op.output[0]], name=f"{tag}/Cast", to=dtype)
                     if dtype != TensorProto.FLOAT else
                     helper.make_node("Identity", [drawn], [op.output[0]], name=f"{tag}/Identity"))
        new_nodes[op.output[0]] = nodes
        if op is prior:
            frames_tensor = f"{tag}/width"

    rebuilt: list[onnx.NodeProto] = []
    for node in graph.node:
        rebuilt.extend(new_nodes.get(node.output[0], [node]) if node.op_type in RANDOM_OPS else [node])
    del graph.node[:]
    graph.node.extend(rebuilt)

    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch_size"
    phonemes = graph.input[0].type.tensor_type.shape.dim[1].dim_param or "phonemes"
    inputs = [helper.make_tensor_value_info(LATENT_INPUT, TensorProto.FLOAT, [batch, channels, "noise_frames"])]
    if duration is not None:
        inputs.insert(0, helper.make_tensor_value_info(DURATION_INPUT, TensorProto.FLOAT, [batch, 2, phonemes]))
    at = next((i for i, v in enumerate(graph.input) if v.name == "sid"), len(graph.input))  # sid stays last
    for offset, value in enumerate(inputs):
        graph.input.insert(at + offset, value)
    graph.output.append(helper.make_tensor_value_info(FRAMES_OUTPUT, TensorProto.INT64, [1]))
    graph.node.append(helper.make_node("Identity", [frames_tensor], [FRAMES_OUTPUT], name="/seeded/frames"))
    return model


def seeded_graph(model_path: Path, name: str, cache_dir: Path | None = None) -> Path:
    """The voice's one-piece graph with noise inputs, written on first use (atomically, one
    process at a time) under the voice's content hash. Raises SeedingError when it cannot."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        target = root / f"{_digest(model_path)}-seeded{SEEDED_FORMAT}.onnx"
        if target.is_file():
            return target
        try:
            import onnx
        except ImportError as exc:
            raise SeedingError(f"seeding its graph needs the onnx package ({exc})") from exc
        root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(root / f"{target.name}.lock"):
            if target.is_file():  # another process wrote it while this one waited
                return target
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".onnx", dir=root)
            os.close(fd)
            try:
                model = seed_inputs(onnx.load(str(model_path)))
                onnx.checker.check_model(model)
                onnx.save(model, tmp)
                os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a service sharing the cache
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        raise SeedingError(f"voice {name!r}: cannot cache its seeded graph in {root}: {exc}") from exc
    except SeedingError as exc:
        raise SeedingError(f"voice {name!r}: {exc}") from exc
    except Exception as exc:  # onnx raises DecodeError, ValidationError and friends
        raise SeedingError(f"voice {name!r}: cannot give its graph noise inputs: {exc}") from exc
    return target
