"""INT8 (quantized vocoder) Piper models: length, error measure, cache, engine option.

Runs on tiny random voices; the numbers for the bundled voice come from tools/int8_bench.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from voxpipe.daemon.cli import build_parser  # noqa: E402
from voxpipe.config import Config, ConfigError, load_config, validate  # noqa: E402
from voxpipe.stages.families.piper import noise  # noqa: E402
from voxpipe.stages.families.piper.engines import create_engine, quantize  # noqa: E402
from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.engines.signal_quality import snr_db  # noqa: E402
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice  # noqa: E402
from voxpipe.stages.families.piper.phonemize import Phonemizer  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

TEXT = "The lighthouse keeper climbed the stairs."
QUANTIZED_OPS = {"ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    # One voice keeps the module fast; several speakers make calibration feed speaker ids too.
    root = tmp_path_factory.mktemp("voices")
    write_random_piper_voice(root, "tiny", seed=4, num_speakers=3, sample_rate=22050)
    return root


@pytest.fixture(scope="module")
def static_cache(tmp_path_factory) -> Path:
    """Shared by the tests that need the static model, so it is built once (whichever runs first)."""
    return tmp_path_factory.mktemp("int8")


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _audio(session, ids: np.ndarray, sid: int | None = None) -> np.ndarray:
    feeds = {"input": ids[None].astype(np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
             "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)}  # noise off: deterministic
    if sid is not None:
        feeds["sid"] = np.array([sid], dtype=np.int64)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if "dp_noise" in inputs:  # seeded graphs take their (here silenced) noise as inputs
        feeds["dp_noise"] = noise.duration_noise(0, len(ids))[None]
    if "z_noise" in inputs:
        feeds["z_noise"] = noise.latent_noise(0, inputs["z_noise"][1], 8 * len(ids) + 64)[None]
    return session.run(None, feeds)[0].reshape(-1)


# --------------------------------------------------------------------------- the error measure


def test_snr_of_a_known_signal():
    t = np.arange(16000) / 16000.0
    reference = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    assert snr_db(reference, reference * 1.1) == pytest.approx(20.0, abs=1e-4)  # error = 0.1 * signal
    noise = np.where(np.arange(t.size) % 2, 0.01, -0.01)  # power 1e-4 against the sine's 0.5
    assert snr_db(reference, reference + noise) == pytest.approx(10 * np.log10(0.5 / 1e-4), abs=0.01)
    assert snr_db(reference, reference) == float("inf")
    with pytest.raises(ValueError, match="lengths differ"):
        snr_db(reference, reference[:-1])
    assert snr_db(reference, np.concatenate([reference, [1.0]]), trim=True) == float("inf")  # the common start
    assert snr_db(np.zeros(4), np.ones(4)) == float("-inf")  # a silent reference


@pytest.mark.slow
def test_decoder_nodes_scoped_and_unscoped(voices):
    proto = onnx.load(str(voices / "tiny" / "tiny.onnx"))
    scoped = quantize.decoder_nodes(proto)
    assert scoped and all(n.startswith("/dec/") for n in scoped)
    index = {node.name: i for i, node in enumerate(proto.graph.node)}
    computing = {index[n] for n in scoped if proto.graph.node[index[n]].op_type != "Constant"}
    for i, node in enumerate(proto.graph.node):  # older exporters: "Conv_12", no scopes
        node.name = f"{node.op_type}_{i}"
    unscoped = quantize.decoder_nodes(proto)
    positions = {int(name.rsplit("_", 1)[1]) for name in unscoped}
    # The same vocoder (its constants aside), plus at most the output reshaping after it.
    assert computing <= positions
    assert not {proto.graph.node[i].op_type for i in positions - computing} & {"Conv", "ConvTranspose", "MatMul"}


# --------------------------------------------------------------------------- the models


@pytest.mark.slow
@pytest.mark.parametrize("method", quantize.METHODS)
def test_int8_model_keeps_the_float_length(voices, static_cache, tmp_path, method):
    spec = VoiceCatalog(voices).get("tiny")
    calibration = quantize.voice_calibration(spec)
    assert calibration.num_speakers == spec.settings.num_speakers == 3
    path = quantize.int8_model(spec.model_path, method, calibration, static_cache if method == "static" else tmp_path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops & QUANTIZED_OPS, "nothing was quantized"
    ids = Phonemizer(spec).text_to_ids(TEXT)
    float_session, int8_session = _session(spec.model_path), _session(path)
    for sid in (0, 2):
        reference, test = _audio(float_session, ids, sid), _audio(int8_session, ids, sid)
        assert len(test) == len(reference) > 0
        snr = snr_db(reference, test)
        assert np.isfinite(snr) and snr > 0  # changed, but still the same audio


@pytest.mark.slow
def test_cache_is_reused_and_keyed_by_content(voices, tmp_path):
    source = voices / "tiny" / "tiny.onnx"
    first = quantize.int8_model(source, "dynamic", cache_dir=tmp_path / "cache")
    stamp = first.stat()
    again = quantize.int8_model(source, "dynamic", cache_dir=tmp_path / "cache")
    assert again == first
    assert (again.stat().st_mtime_ns, again.stat().st_ino) == (stamp.st_mtime_ns, stamp.st_ino)  # not rewritten
    # Same file name, other weights: a retrained voice must not get the old int8 model.
    proto = onnx.load(str(source))
    weight = next(i for i in proto.graph.initializer if i.name.startswith("dec."))
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    changed = tmp_path / "tiny.onnx"
    onnx.save(proto, str(changed))
    other = quantize.int8_model(changed, "dynamic", cache_dir=tmp_path / "cache")
    assert other != first and other.is_file() and first.is_file()
    assert quantize.cached_path(source, "static", tmp_path / "cache") != first  # the recipe is in the key
    assert not list((tmp_path / "cache").glob(".*.onnx")), "a temporary file was left behind"


@pytest.mark.slow
def test_unknown_method_is_refused(voices, tmp_path):
    with pytest.raises(quantize.QuantizeError, match="unknown int8 method"):
        quantize.int8_model(voices / "tiny" / "tiny.onnx", "int4", cache_dir=tmp_path)


# --------------------------------------------------------------------------- engine and config


@pytest.mark.slow
def test_engine_int8_option(voices, static_cache, caplog):
    spec = VoiceCatalog(voices).get("tiny")
    # One session per graph and the model's own level: the figures compared here are the model's.
    plain = {"max_threads": 1, "loudness": False}
    settings = EngineSettings(precision="int8", options={"int8_cache_dir": str(static_cache), **plain})
    engine = create_engine("onnx", settings)
    with caplog.at_level(logging.WARNING, logger="voxpipe.stages.families.piper.engines.onnx_engine"):
        voice = engine.load_voice(spec)
    (model,) = static_cache.glob("*-static-*.onnx")
    assert voice.nbytes == model.stat().st_size
    snr = quantize.read_measured_snr(model)
    assert snr is not None and np.isfinite(snr)
    warned = [r.getMessage() for r in caplog.records if "int8" in r.getMessage()]
    if snr < quantize.INAUDIBLE_SNR_DB:  # the warning names the measured figure
        assert warned and f"{snr:.1f} dB" in warned[0]
    else:
        assert not warned
    fp32 = create_engine("onnx", EngineSettings(options=plain))
    float_voice = fp32.load_voice(spec)
    phonemizer = Phonemizer(spec)
    for text in (TEXT, quantize.PROBE_TEXT):
        item = SynthesisItem(phonemizer.text_to_ids(text), 0.0, 1.0, 0.0, speaker_id=0)
        reference, audio = fp32.synthesize(float_voice, [item])[0], engine.synthesize(voice, [item])[0]
        assert len(audio) == len(reference)
    assert snr_db(reference, audio) == pytest.approx(snr, abs=1e-3)  # the recorded figure is the probe's
    stamps = [f.stat().st_mtime_ns for f in (model, model.with_suffix(".json"))]
    engine.load_voice(spec)  # warm: the cached model and its measured error are reused
    assert [f.stat().st_mtime_ns for f in (model, model.with_suffix(".json"))] == stamps


def test_int8_is_not_the_default():
    assert Config().worker.precision == "fp32"
    assert load_config(None).worker.precision == "fp32"
    assert EngineSettings().precision == "fp32"
    assert build_parser("serve").parse_args(["serve"]).precision is None  # the config decides
    assert build_parser("serve").parse_args(["serve", "--precision", "int8"]).precision == "int8"


def test_unknown_precision_is_a_config_error():
    config = Config()
    config.worker.precision = "int4"
    with pytest.raises(ConfigError, match="worker.precision"):
        validate(config)
