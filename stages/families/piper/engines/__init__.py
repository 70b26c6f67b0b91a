"""The Piper/VITS runtimes, chosen by name (`--engine`); imported lazily so torch and
TensorRT stay optional."""
from __future__ import annotations

import importlib

from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings

_ENGINES = {
    "onnx": ("voxpipe.stages.families.piper.engines.onnx_engine", "OnnxEngine"),
    "torch": ("voxpipe.stages.families.piper.engines.torch_engine", "TorchEngine"),
    "tensorrt": ("voxpipe.stages.families.piper.engines.tensorrt_engine", "TensorRTEngine"),
    "null": ("voxpipe.stages.families.piper.engines.null_engine", "NullEngine"),
}


def engine_names() -> list[str]:
    return list(_ENGINES)


def create_engine(name: str, settings: EngineSettings) -> Engine:
    if name not in _ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(_ENGINES)}")
    module_name, class_name = _ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError(f"engine {name!r} is not installed here ({exc}); "
                          f"install voxpipe's extra for it, e.g. pip install 'voxpipe[{'torch' if name == 'torch' else 'gpu'}]'") from exc
    return getattr(module, class_name)(settings)
