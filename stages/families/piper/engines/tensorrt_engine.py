"""TensorRT engine: the torch engine with its vocoder compiled by TensorRT.

The acoustic part stays in torch on the GPU: its output length depends on the predicted
durations, which a static TensorRT plan handles badly. The vocoder, which is most of the
work, runs from a plan built from the exported vocoder graph with optimization profiles
for the batch and frames ranges. Plans are cached on disk (tensorrt_plan.PlanKey says
what they depend on) so only the first load of a voice on a GPU model builds one.
Batches outside every profile (longer than `trt_max_frames`) use the torch vocoder.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
import numpy as np
import torch

from voxpipe.stages.engines.base import EngineError, EngineSettings, LoadedVoice
from voxpipe.stages.families.piper.engines.tensorrt_build import build_in_subprocess
from voxpipe.stages.families.piper.engines.tensorrt_plan import (
    PlanKey, build_lock, default_plan_dir, file_sha256, profile_specs, read_plan)
from voxpipe.stages.families.piper.engines.tensorrt_runtime import PlanLoadError, TrtVocoder, import_tensorrt
from voxpipe.stages.families.piper.engines.torch_engine import TorchEngine
from voxpipe.stages.families.piper.spec import piper_settings
from voxpipe.stages.families.piper.vits.export import export_vocoder
from voxpipe.stages.families.piper.vits.load import load_piper_onnx
from voxpipe.stages.families.piper.vits.model import VitsModel
from voxpipe.stages.voices import VoiceSpec

_LOG = logging.getLogger(__name__)


def require_gpu(settings: EngineSettings) -> None:
    """EngineError unless this worker has a CUDA GPU to run TensorRT on."""
    if settings.device != "cuda" or not torch.cuda.is_available():
        where = "no CUDA device is visible" if settings.device == "cuda" else f"it runs on {settings.device!r}"
        raise EngineError(f"engine 'tensorrt' needs an NVIDIA GPU with CUDA, and this worker has none ({where}); "
                          f"use engine 'torch' or 'onnx' on CPUs")


class TensorRTEngine(TorchEngine):
    name = "tensorrt"

    def __init__(self, settings: EngineSettings) -> None:
        require_gpu(settings)
        self._trt, self._cuda = import_tensorrt()
        super().__init__(settings)
        self.cuda_graphs = False  # TensorRT runs the vocoder; only long batches fall back to torch
        options = settings.options
        self.plan_dir = Path(options.get("plan_dir") or default_plan_dir())
        self.workspace_mib = int(options.get("workspace_mib") or os.environ.get("VOXPIPE_TRT_WORKSPACE_MIB") or 2048)
        self.build_timeout_s = float(options.get("trt_build_timeout_s", 3600))
        self.specs = profile_specs(self.max_batch, int(options.get("trt_max_frames", 2048)),
                                   batch_buckets=tuple(options.get("trt_batch_buckets", ())),
                                   min_frames=int(options.get("trt_min_frames", 16)),
                                   growth=int(options.get("trt_frame_growth", 2)))
        self._runners: dict[int, TrtVocoder] = {}  # id(model) -> its plan

    # ------------------------------------------------------------------ plans

    def plan_key(self, spec: VoiceSpec) -> PlanKey:
        index = torch.cuda.current_device()
        return PlanKey(gpu_name=torch.cuda.get_device_name(index),
                       compute_capability=tuple(torch.cuda.get_device_capability(index)),  # type: ignore[arg-type]
                       tensorrt_version=str(self._trt.__version__), voice_sha256=file_sha256(spec.model_path),
                       precision=self.settings.precision, profiles=tuple(self.specs))

    def plan_path(self, spec: VoiceSpec) -> Path:
        return self.plan_dir / self.plan_key(spec).file_name(spec.name)

    def _build(self, spec: VoiceSpec, model: VitsModel, path: Path) -> None:
        _LOG.warning("voice %r: building a TensorRT plan (%d profiles); this takes a while once per GPU model",
                     spec.name, len(self.specs))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
            onnx_path = export_vocoder(model, Path(tmp) / "vocoder.onnx")
            build_in_subprocess(onnx_path, path, self.specs, self.settings.precision, self.workspace_mib,
                                self.build_timeout_s)

    def _runner(self, spec: VoiceSpec, model: VitsModel) -> tuple[TrtVocoder, int]:
        """The voice's plan, from the cache or built (again, if the cached one is rejected)."""
        path = self.plan_path(spec)
        for attempt in range(2):
            plan = read_plan(path)
            if plan is None:
                with build_lock(path):
                    plan = read_plan(path)  # another worker may have built it meanwhile
                    if plan is None:
                        self._build(spec, model, path)
                        plan = read_plan(path)
            if plan is None:
                raise EngineError(f"voice {spec.name!r}: TensorRT build wrote no plan at {path}")
            try:
                return TrtVocoder(self._trt, self._cuda, plan, self.specs, torch.cuda.current_device()), len(plan)
            except (PlanLoadError, RuntimeError, TypeError) as exc:
                if attempt:
                    raise EngineError(f"voice {spec.name!r}: TensorRT cannot load its fresh plan: {exc}") from exc
                _LOG.warning("voice %r: cached TensorRT plan %s rejected (%s); rebuilding", spec.name, path, exc)
                path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ voices

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        model = load_piper_onnx(spec.model_path, spec.name, piper_settings(spec).num_speakers)  # fp32 on the CPU: exportable
        try:
            runner, plan_bytes = self._runner(spec, model)
        except EngineError:
            raise
        except Exception as exc:  # BuildError, pycuda's and TensorRT's own errors
            raise EngineError(f"voice {spec.name!r}: TensorRT: {exc}") from exc
        try:
            voice = self._place(spec, model)
        except BaseException:
            runner.close()
            raise
        self._runners[id(voice.model)] = runner
        voice.nbytes += plan_bytes
        return voice

    def unload_voice(self, voice: LoadedVoice) -> None:
        runner = self._runners.pop(id(voice.model), None)
        if runner is not None:
            runner.close()
        super().unload_voice(voice)

    # ------------------------------------------------------------------ synthesis

    def _vocode(self, voice: LoadedVoice, model: VitsModel, z: torch.Tensor, frames: torch.Tensor,
                sid: torch.Tensor | None) -> np.ndarray:
        runner = self._runners.get(id(model))
        if runner is None or not runner.covers(z.shape[0], z.shape[2]):
            return super()._vocode(voice, model, z, frames, sid)
        try:
            return runner.run(z, frames, sid)
        except RuntimeError:
            raise
        except Exception as exc:  # pycuda's errors: RuntimeError lets synthesize() sort out of memory from the rest
            raise RuntimeError(f"TensorRT vocoder: {exc}") from exc
