"""GPU discovery: nvidia-ml-py where present, else CPU mode."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int
    uuid: str


def discover_gpus() -> list[Gpu]:
    """Visible NVIDIA GPUs (respecting CUDA_VISIBLE_DEVICES given as indices); [] if none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: CPU mode
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(Gpu(index, name.decode() if isinstance(name, bytes) else name,
                            int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                            str(pynvml.nvmlDeviceGetUUID(handle))))
    finally:
        pynvml.nvmlShutdown()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        gpus = [g for g in gpus if str(g.index) in wanted or g.uuid in wanted]
    return gpus
