"""A Piper voice's vocoder precision on the onnx engine: bf16 (torch) within its bound on a
trained voice, `auto` probed once per machine and cached, and fp32 where bf16 units are
missing (stages/families/piper/engines/vocoder_precision.py)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the split graphs and the bf16 vocoder need torch and onnx
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from voxpipe.config import ConfigError, load_config  # noqa: E402
from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.engines.signal_quality import snr_db  # noqa: E402
from voxpipe.stages.families.piper.engines import create_engine, vocoder_precision  # noqa: E402
from voxpipe.stages.families.piper.engines.vocoder_precision import (  # noqa: E402
    MIN_SNR_DB, VocoderPrecisionError, choose)
from voxpipe.stages.families.piper.item import SynthesisItem  # noqa: E402
from voxpipe.stages.families.piper.phonemize import Phonemizer  # noqa: E402
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

REFERENCE = np.sin(np.linspace(0.0, 200.0, 4000)).astype(np.float32)


def _engine(tmp: Path, **options):
    return create_engine("onnx", EngineSettings(options={"busy_dir": str(tmp / "busy"), "max_threads": 2,
                                                         "vocoder_precision_cache_dir": str(tmp / "choices"),
                                                         **options}))


def _no_bf16_units(monkeypatch) -> None:
    monkeypatch.setattr(vocoder_precision, "cpu_flags", lambda: {"avx2", "fma"})


def _bf16_units(monkeypatch) -> None:
    monkeypatch.setattr(vocoder_precision, "cpu_flags", lambda: {"avx2", "fma", "avx512_bf16"})


def _renderers(bf16_audio: np.ndarray, fp32_s: float = 0.02, calls: list[str] | None = None, bf16_s: float = 0.0):
    """fp32 renders the reference in `fp32_s`, bf16 renders `bf16_audio` in `bf16_s`."""
    def renderer(precision: str):
        if calls is not None:
            calls.append(precision)
        if precision == "fp32":
            return lambda: (time.sleep(fp32_s), REFERENCE)[1]
        return lambda: (time.sleep(bf16_s), bf16_audio)[1]
    return renderer


# ------------------------------------------------------------------ the choice


def test_auto_picks_the_faster_precision_within_its_bound_and_caches_it(tmp_path, monkeypatch):
    _bf16_units(monkeypatch)
    close = REFERENCE + np.float32(1e-3) * np.cos(np.arange(len(REFERENCE), dtype=np.float32))
    calls: list[str] = []
    first = choose("auto", _renderers(close, calls=calls), lambda: "key", tmp_path)
    assert (first.precision, first.how) == ("bf16", "probed")
    assert "-> bf16" in first.notes[0] and "dB" in first.notes[0]
    assert calls == ["fp32", "bf16"]
    again = choose("auto", _renderers(close, calls=calls), lambda: "key", tmp_path)
    assert (again.precision, again.how, again.notes) == ("bf16", "cached", first.notes)
    assert calls == ["fp32", "bf16"]  # the cached choice ran no probe
    other = choose("auto", _renderers(REFERENCE * 0.0), lambda: "another machine", tmp_path)
    assert other.how == "probed"  # another key is probed afresh


def test_a_faster_precision_under_its_bound_is_refused(tmp_path, monkeypatch):
    _bf16_units(monkeypatch)
    noisy = REFERENCE + np.float32(0.1) * np.cos(np.arange(len(REFERENCE), dtype=np.float32))
    assert snr_db(REFERENCE, noisy) < MIN_SNR_DB
    choice = choose("auto", _renderers(noisy), lambda: "key", tmp_path)
    assert choice.precision == "fp32"
    assert f"under {MIN_SNR_DB:g}" in choice.notes[0]


def test_a_precision_that_fails_or_is_slower_leaves_fp32(tmp_path, monkeypatch):
    _bf16_units(monkeypatch)

    def failing(precision: str):
        if precision == "bf16":
            raise RuntimeError("no bf16 kernels")
        return lambda: REFERENCE
    choice = choose("auto", failing, lambda: "failing", tmp_path)
    assert choice.precision == "fp32" and "failed: RuntimeError: no bf16 kernels" in choice.notes[0]
    slow = choose("auto", _renderers(REFERENCE, fp32_s=0.0, bf16_s=0.02), lambda: "slower", tmp_path)
    assert slow.precision == "fp32"  # a slower one is never chosen, whatever its error


def test_without_bf16_units_auto_is_fp32_without_a_probe_and_bf16_falls_back(tmp_path, monkeypatch):
    _no_bf16_units(monkeypatch)
    calls: list[str] = []
    auto = choose("auto", _renderers(REFERENCE, calls=calls), lambda: "key", tmp_path)
    assert (auto.precision, auto.how, calls) == ("fp32", "only fp32 here", [])
    explicit = choose("bf16", _renderers(REFERENCE, calls=calls), lambda: "key", tmp_path)
    assert explicit.precision == "fp32" and "no bf16 units" in explicit.notes[0]
    assert choose("fp32", _renderers(REFERENCE), lambda: "key", tmp_path).how == "configured"
    with pytest.raises(VocoderPrecisionError, match="int8"):
        choose("int8", _renderers(REFERENCE), lambda: "key", tmp_path)


def test_the_config_refuses_an_unknown_vocoder_precision(tmp_path):
    path = tmp_path / "voxpipe.toml"
    path.write_text('[worker]\nvocoder_precision = "fp16"\n')
    with pytest.raises(ConfigError, match="worker.vocoder_precision"):
        load_config(path)
    path.write_text('[worker]\nvocoder_precision = "bf16"\n')
    assert load_config(path).worker.vocoder_precision == "bf16"


# ------------------------------------------------------------------ on the engine


def test_bf16_vocoder_on_a_trained_voice_is_within_its_bound_streamed_or_whole(tmp_path):
    """`joe` through the torch bf16 generator (emulated on a CPU without bf16 units: slow
    here, so one short sentence): whole and streamed within 30 dB of fp32's audio."""
    spec = VoiceCatalog(None).get("joe")
    fp32 = _engine(tmp_path, vocoder_precision="fp32")
    bf16 = _engine(tmp_path, vocoder_precision="bf16", bf16_anywhere=True)
    fp32_voice, bf16_voice = fp32.load_voice(spec), bf16.load_voice(spec)
    assert bf16_voice.model.torch_vocoder is not None and fp32_voice.model.torch_vocoder is None
    assert bf16_voice.details["precision"] == "vocoder bf16 (configured)"
    assert bf16_voice.nbytes > fp32_voice.nbytes  # the cache counts the generator's copy
    item = SynthesisItem(Phonemizer(spec).text_to_ids("Good morning, everyone."), 0.667, 1.0, 0.8, seed=11)
    reference = fp32.synthesize(fp32_voice, [item])[0]
    whole = bf16.synthesize(bf16_voice, [item])[0]
    streamed = np.concatenate(list(bf16.synthesize_stream(bf16_voice, item, 16)))
    assert len(whole) == len(streamed) == len(reference)
    assert snr_db(reference, whole) >= MIN_SNR_DB
    assert snr_db(reference, streamed) >= MIN_SNR_DB
    assert snr_db(whole, streamed) >= 60  # windows join: only bf16 rounding at their edges differs


def test_auto_on_the_engine_probes_once_and_reports_in_status_details(tmp_path, monkeypatch):
    write_random_piper_voice(tmp_path / "voices", "tiny", seed=3, sample_rate=16000)
    spec = VoiceCatalog(tmp_path / "voices").get("tiny")
    parts = {"parts_cache_dir": str(tmp_path / "parts")}
    _no_bf16_units(monkeypatch)
    plain = _engine(tmp_path, **parts).load_voice(spec)
    assert plain.details["precision"] == "vocoder fp32 (only fp32 here)"
    assert plain.model.torch_vocoder is None
    probed = _engine(tmp_path, bf16_anywhere=True, **parts).load_voice(spec)
    assert probed.details["precision"].endswith("(probed)")
    note = probed.details["precision_notes"][0]
    assert note.startswith("vocoder: fp32 ") and " bf16 " in note and " dB" in note
    cached = _engine(tmp_path, bf16_anywhere=True, **parts).load_voice(spec)
    assert cached.details["precision"].endswith("(cached)")
    assert cached.details["precision_notes"] == probed.details["precision_notes"]
    chosen = probed.details["precision"].split()[1]
    assert (probed.model.torch_vocoder is not None) == (chosen == "bf16")
