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
        return LoadedVoice(spec=spec, model=session, nbytes=spec.model_path.stat().st_size)

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
