"""INT8 versions of Piper voices, made with onnxruntime's quantization tools.

Only the vocoder (HiFi-GAN decoder, the `dec.*` part of the graph) is quantized: quantizing
the whole graph changes the predicted durations, so the audio no longer lines up with the
float model at all. With the text encoder, duration predictor and flow left in float, an
INT8 model yields exactly the float model's length and its error is the vocoder's alone.

Two recipes:
- "dynamic": weights stored as int8, activations quantized on the fly (ConvInteger);
  the vocoder's transposed convolutions stay float (no dynamic kernel exists for them).
- "static": QDQ with per-channel int8 weights and activation ranges calibrated on a few
  phoneme sequences run through the whole model; onnxruntime fuses it to QLinearConv.

The graph quantized is the voice's with its random ops rewritten into noise inputs
(onnx_seeded.py), so a seeded chunk renders the same int8 audio every time.

Quantized files are cached by the source model's content, onnxruntime's version and the
recipe, so a worker builds one once and every later load reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from voxpipe.procutil import exclusive_lock
from voxpipe.stages.voices import VoiceSpec

if TYPE_CHECKING:
    import onnx

METHODS = ("static", "dynamic")
DEFAULT_METHOD = "static"
RECIPE_VERSION = 2  # part of the cache key: bump when a recipe changes (2: noise inputs)
DECODER_SCOPE = "/dec/"
DECODER_WEIGHTS = "dec."
_QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul"]
INAUDIBLE_SNR_DB = 25.0  # below this the quantization error can be heard
CALIBRATION_TEXTS = (
    "A calm voice reads the evening news.",
    "Why did the seven engineers leave so early?",
    "Numbers like forty two and ninety nine appear in tables.",
    "She sells sea shells by the shore, quietly, while gulls cry overhead!",
)
PROBE_TEXT = "Measuring the error of a smaller model takes one short sentence."


class QuantizeError(Exception):
    """A model that cannot be quantized (no vocoder found, unknown recipe, tool failure)."""


@dataclass(frozen=True)
class Calibration:
    """What the static recipe runs through the model to find activation ranges."""

    phoneme_ids: tuple[np.ndarray, ...]
    # Noise on and off: served requests use the voice's noise, the benchmark none.
    scales: tuple[tuple[float, float, float], ...] = ((0.667, 1.0, 0.8), (0.0, 1.0, 0.0))
    num_speakers: int = 1


def decoder_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the vocoder's nodes. Scoped exports name them `/dec/...`; for older unscoped
    graphs ("Conv_12") the vocoder is every node downstream of one that reads a `dec.*` weight."""
    named = [n.name for n in model.graph.node if n.name.startswith(DECODER_SCOPE)]
    if named:
        return named
    weights = {i.name for i in model.graph.initializer if i.name.startswith(DECODER_WEIGHTS)}
    reached: set[str] = set()
    found: list[str] = []
    for node in model.graph.node:  # ONNX stores nodes in topological order
        if node.name and (weights.intersection(node.input) or reached.intersection(node.input)):
            found.append(node.name)
            reached.update(node.output)
    return found


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/voxpipe/int8 (the systemd unit points XDG_CACHE_HOME at its CacheDirectory)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "voxpipe" / "int8"


def cache_key(model_path: Path, method: str) -> str:
    """Content hash of the model + onnxruntime version + recipe: a retrained voice under the
    same file name, or a newer quantizer, gets a new file."""
    import onnxruntime

    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    tag = f"{digest.hexdigest()[:32]}-ort{onnxruntime.__version__}-{method}-r{RECIPE_VERSION}"
    return tag.replace("+", "_")


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: one feed dict per call, None at the end."""

    def __init__(self, calibration: Calibration, noise_inputs: frozenset[str] = frozenset(),
                 channels: int = 0) -> None:
        from voxpipe.stages.families.piper import noise

        feeds = []
        for n, ids in enumerate(calibration.phoneme_ids):
            for scales in calibration.scales:
                feed = {"input": np.asarray(ids, dtype=np.int64)[None, :],
                        "input_lengths": np.array([len(ids)], dtype=np.int64),
                        "scales": np.array(scales, dtype=np.float32)}
                if calibration.num_speakers > 1:
                    feed["sid"] = np.array([n % calibration.num_speakers], dtype=np.int64)
                if "dp_noise" in noise_inputs:
                    feed["dp_noise"] = noise.duration_noise(n, len(ids))[None]
                if "z_noise" in noise_inputs:  # wider than speech takes; extra frames are unused
                    feed["z_noise"] = noise.latent_noise(n, channels, 8 * len(ids) + 64)[None]
                feeds.append(feed)
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the protocol; one pass is all the calibrator makes
        pass


def quantize_vocoder(source: Path, target: Path, method: str, calibration: Calibration | None = None) -> None:
    """Write an INT8 copy of Piper model `source` to `target`, its vocoder quantized by `method`
    and its noise taken as inputs (a graph that draws its own is rewritten first)."""
    import onnx

    from voxpipe.stages.families.piper.engines import onnx_seeded

    if method not in METHODS:
        raise QuantizeError(f"unknown int8 method {method!r}; choose one of {', '.join(METHODS)}")
    model = onnx.load(str(source))
    if any(n.op_type in onnx_seeded.RANDOM_OPS for n in model.graph.node):
        try:
            onnx_seeded.seed_inputs(model)
        except onnx_seeded.SeedingError as exc:
            raise QuantizeError(f"{source.name}: {exc}") from exc
        seeded = target.with_name(f".{target.stem}.seeded.onnx")
        onnx.save(model, str(seeded))
        try:
            _quantize(model, seeded, target, method, calibration)
        finally:
            seeded.unlink(missing_ok=True)
        return
    _quantize(model, source, target, method, calibration)


def _quantize(model: onnx.ModelProto, source: Path, target: Path, method: str,
              calibration: Calibration | None) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    from voxpipe.stages.families.piper.engines import onnx_seeded

    nodes = decoder_nodes(model)
    # Only the op types the vocoder has: the calibrator records every tensor of these types
    # in the whole graph, so an extra type costs calibration time for nothing.
    names = set(nodes)
    ops = sorted({n.op_type for n in model.graph.node if n.name in names} & set(_QUANTIZED_OPS))
    if not ops:
        raise QuantizeError(f"{source.name}: no vocoder (dec.*) convolutions found to quantize")
    if method == "dynamic":
        quantize_dynamic(source, target, op_types_to_quantize=ops, nodes_to_quantize=nodes,
                         weight_type=QuantType.QInt8, per_channel=True)
        return
    if calibration is None or not calibration.phoneme_ids:
        raise QuantizeError("static int8 needs calibration phoneme sequences")
    noise_inputs = frozenset(i.name for i in model.graph.input) & {onnx_seeded.DURATION_INPUT,
                                                                    onnx_seeded.LATENT_INPUT}
    channels = next((int(i.type.tensor_type.shape.dim[1].dim_value) for i in model.graph.input
                     if i.name == onnx_seeded.LATENT_INPUT), 0)
    reader = _Reader(calibration, noise_inputs, channels)
    CalibrationDataReader.register(_Reader)  # an ABC: isinstance checks pass without inheriting
    quantize_static(source, target, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                    nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


class _HintFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


class _ToStderr(logging.Handler):
    """Stands in for the root logger's missing handlers: logging.warning() on an unconfigured
    root would otherwise call basicConfig() and reconfigure logging for the whole process."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


@contextmanager
def _no_preprocess_hint() -> Iterator[None]:
    """onnxruntime's quantizer advises pre-processing (shape inference) through the root
    logger; these graphs quantize fine without it, so the hint is dropped."""
    root, hint, stand_in = logging.getLogger(), _HintFilter(), _ToStderr()
    added = not root.handlers
    root.addFilter(hint)
    if added:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeFilter(hint)
        if added:
            root.removeHandler(stand_in)




def cached_path(source: Path, method: str, cache_dir: Path | None = None) -> Path:
    """Where the INT8 model of `source` by `method` is (or will be) cached."""
    if method not in METHODS:
        raise QuantizeError(f"unknown int8 method {method!r}; choose one of {', '.join(METHODS)}")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{cache_key(source, method)}.onnx"


def int8_model(source: Path, method: str = DEFAULT_METHOD, calibration: Calibration | None = None,
               cache_dir: Path | None = None, target: Path | None = None) -> Path:
    """The cached INT8 model for `source`, built (atomically) on first use; `target` is
    cached_path()'s answer when the caller already has it (saves hashing the file again)."""
    target = target or cached_path(source, method, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_suffix(".lock")):
        if target.is_file():  # another process built it while this one waited
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".onnx", dir=target.parent)
        os.close(fd)
        try:
            with _no_preprocess_hint():
                quantize_vocoder(source, Path(tmp), method, calibration)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a service sharing the cache
            os.replace(tmp, target)
        except Exception as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, QuantizeError):
                raise
            if isinstance(exc, ImportError):  # onnxruntime's quantizer needs the onnx package
                raise QuantizeError(f"int8 needs the onnx package (pip install onnx): {exc}") from exc
            raise QuantizeError(f"{source.name}: int8 quantization ({method}) failed: {exc}") from exc
    return target


def read_measured_snr(model: Path) -> float | None:
    """The probe SNR recorded beside a cached INT8 model, if any."""
    try:
        return float(json.loads(model.with_suffix(".json").read_text())["probe_snr_db"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_measured_snr(model: Path, snr: float) -> None:
    """Record the probe SNR beside the model; a cache that cannot be written just measures again."""
    side = model.with_suffix(".json")
    tmp = side.with_name(f".{side.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"probe_snr_db": snr}))
        os.replace(tmp, side)
    except OSError:
        tmp.unlink(missing_ok=True)


def calibration_for(phoneme_ids: Sequence[np.ndarray], noise: tuple[float, float, float],
                    num_speakers: int) -> Calibration:
    """Calibration with the voice's own noise settings and none."""
    quiet = (0.0, noise[1], 0.0)
    return Calibration(tuple(phoneme_ids), (noise, quiet) if noise != quiet else (quiet,), num_speakers)


def voice_calibration(spec: VoiceSpec) -> Calibration:
    """Calibration for a Piper voice: its phonemizer's ids for a few fixed sentences (none of
    them a benchmark text, so the benchmark measures unseen input)."""
    from voxpipe.stages.families.piper.phonemize import Phonemizer

    from voxpipe.stages.families.piper.spec import piper_settings

    settings = piper_settings(spec)
    phonemizer = Phonemizer(spec)
    ids = [phonemizer.text_to_ids(text) for text in CALIBRATION_TEXTS]
    return calibration_for([i for i in ids if len(i) > 2], (settings.noise_scale, settings.length_scale, settings.noise_w),
                           settings.num_speakers)
