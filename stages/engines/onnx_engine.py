"""onnxruntime engine: runs a Piper voice's .onnx as shipped. The default on CPU.

precision "int8" runs a copy whose vocoder onnxruntime quantized (stages/engines/quantize.py);
settings.options may pick its recipe ("int8_method") and cache folder ("int8_cache_dir").
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice, SynthesisItem
from voxpipe.stages.phonemize import PhonemizeError
from voxpipe.stages.voices import VoiceSpec

_LOG = logging.getLogger(__name__)


class OnnxEngine(Engine):
    name = "onnx"

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        import onnxruntime

        self._ort = onnxruntime

    def _providers(self) -> list[str]:
        if self.settings.device == "cuda" and "CUDAExecutionProvider" in self._ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _session(self, spec: VoiceSpec, path: Path):  # -> onnxruntime.InferenceSession
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = self._ort.InferenceSession(str(path), sess_options=options, providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise EngineError(f"voice {spec.name!r}: cannot load {path.name}: {exc}") from exc
        inputs = {i.name for i in session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= inputs:
            raise EngineError(f"voice {spec.name!r}: {spec.model_path.name} is not a Piper VITS model "
                              f"(inputs {sorted(inputs)})")
        return session

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        if self.settings.precision == "int8":
            return self._load_int8(spec)
        voice = LoadedVoice(spec=spec, model=self._session(spec, spec.model_path),
                            nbytes=spec.model_path.stat().st_size)
        self._probe(voice)
        return voice

    def _load_int8(self, spec: VoiceSpec) -> LoadedVoice:
        """The voice's int8 model, built on first use. A warm load opens that file alone; the
        first one also checks the voice in float32 and measures the int8 error against it."""
        from voxpipe.stages.engines import quantize

        method = str(self.settings.options.get("int8_method", quantize.DEFAULT_METHOD))
        cache_dir = self.settings.options.get("int8_cache_dir")
        try:
            target = quantize.cached_path(spec.model_path, method, Path(cache_dir) if cache_dir else None)
        except (quantize.QuantizeError, OSError) as exc:
            raise EngineError(f"voice {spec.name!r}: no int8 model: {exc}") from exc
        snr = quantize.read_measured_snr(target) if target.is_file() else None
        float_voice = None
        if snr is None:
            float_voice = LoadedVoice(spec=spec, model=self._session(spec, spec.model_path), nbytes=0)
            self._probe(float_voice)
            try:
                calibration = quantize.voice_calibration(spec) if method == "static" else None
                quantize.int8_model(spec.model_path, method, calibration, target=target)
            except (quantize.QuantizeError, PhonemizeError, OSError) as exc:
                raise EngineError(f"voice {spec.name!r}: no int8 model: {exc}") from exc
        voice = LoadedVoice(spec=spec, model=self._session(spec, target), nbytes=target.stat().st_size)
        self._probe(voice)
        if float_voice is not None:
            try:
                snr = self.probe_snr(float_voice, voice)
            except PhonemizeError as exc:
                raise EngineError(f"voice {spec.name!r}: cannot measure the int8 error: {exc}") from exc
            quantize.write_measured_snr(target, snr)
        if snr is not None and snr < quantize.INAUDIBLE_SNR_DB:
            _LOG.warning("voice %r: int8 audio is %.1f dB SNR against float32 (audible below %.0f dB); "
                         "precision fp32 gives full quality", spec.name, snr, quantize.INAUDIBLE_SNR_DB)
        return voice

    def probe_snr(self, float_voice: LoadedVoice, voice: LoadedVoice) -> float:
        """SNR in dB of `voice` against `float_voice` on the probe sentence; -inf if lengths differ."""
        from voxpipe.stages.engines import quantize
        from voxpipe.stages.phonemize import Phonemizer

        ids = Phonemizer(voice.spec).text_to_ids(quantize.PROBE_TEXT)
        item = SynthesisItem(ids, 0.0, voice.spec.length_scale, 0.0)
        reference, test = self._one(float_voice, item), self._one(voice, item)
        return quantize.snr_db(reference, test) if len(reference) == len(test) else float("-inf")

    def _probe(self, voice: LoadedVoice) -> None:
        """One tiny inference with the config's largest phoneme id: a config that does not
        match its model fails here, at load, with the voice's name, not mid-request."""
        spec = voice.spec
        largest = max((i for ids in spec.phoneme_id_map.values() for i in ids), default=0)
        ids = np.array([1, 0, largest, 0, largest, 0, 2], dtype=np.int64)
        try:
            audio = self._one(voice, SynthesisItem(ids, 0.0, 1.0, 0.0))
        except EngineError as exc:
            raise EngineError(f"voice {spec.name!r}: its config does not match its model "
                              f"({spec.config_path.name} vs {spec.model_path.name}): {exc}") from None
        if not len(audio) or not np.isfinite(audio).all():
            raise EngineError(f"voice {spec.name!r}: the model produced no usable audio")

    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        # Piper's exported graphs draw their noise inside the graph with no seed input, so
        # items run one by one: batching buys nothing on onnxruntime's CPU path anyway.
        return [self._one(voice, item) for item in items]

    def _one(self, voice: LoadedVoice, item: SynthesisItem) -> np.ndarray:
        session = voice.model
        ids = np.asarray(item.phoneme_ids, dtype=np.int64)[None, :]
        feeds = {
            "input": ids,
            "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([item.noise_scale, item.length_scale, item.noise_w], dtype=np.float32),
        }
        if "sid" in {i.name for i in session.get_inputs()}:
            feeds["sid"] = np.array([item.speaker_id], dtype=np.int64)
        try:
            audio = session.run(None, feeds)[0]
        except Exception as exc:
            raise EngineError(f"voice {voice.spec.name!r}: inference failed: {exc}") from exc
        return np.ascontiguousarray(audio.reshape(-1), dtype=np.float32)
