"""onnxruntime engine: runs a Piper voice's .onnx as shipped. The default on CPU."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice, SynthesisItem
from stages.voices import VoiceSpec


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

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = self._ort.InferenceSession(str(spec.model_path), sess_options=options,
                                                 providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise EngineError(f"voice {spec.name!r}: cannot load {spec.model_path.name}: {exc}") from exc
        inputs = {i.name for i in session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= inputs:
            raise EngineError(f"voice {spec.name!r}: {spec.model_path.name} is not a Piper VITS model "
                              f"(inputs {sorted(inputs)})")
        voice = LoadedVoice(spec=spec, model=session, nbytes=spec.model_path.stat().st_size)
        self._probe(voice)
        return voice

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
