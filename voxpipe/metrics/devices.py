"""Readings the supervisor takes for status and metrics: per-process resident memory
(from /proc) and per-GPU utilisation and memory (NVML, where a GPU and nvidia-ml-py
exist). NVML is not CUDA: querying it never stops the supervisor from spawning."""
from __future__ import annotations

import os
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a live process, or None when it cannot be read."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class DeviceProbe:
    """The machine's compute devices: one entry per visible GPU, else one for the CPU."""

    def __init__(self, use_gpus: bool) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, str, Any]] = []
        if use_gpus:
            self._open_nvml()

    def _open_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no library or no driver: a CPU machine
            return
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        wanted = None if visible is None else {v.strip() for v in visible.split(",") if v.strip()}
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                if wanted is not None and str(index) not in wanted and str(pynvml.nvmlDeviceGetUUID(handle)) not in wanted:
                    continue
                name = pynvml.nvmlDeviceGetName(handle)
                self._handles.append((index, name.decode() if isinstance(name, bytes) else str(name), handle))
        except Exception:
            pynvml.nvmlShutdown()
            self._handles = []
            return
        self._nvml = pynvml

    def snapshot(self) -> list[dict[str, Any]]:
        if not self._handles:
            try:
                load = os.getloadavg()[0]
            except OSError:
                load = None
            return [{"kind": "cpu", "name": "cpu", "cores": os.cpu_count() or 1, "load_1m": load}]
        devices = []
        nvml = self._nvml
        for index, name, handle in self._handles:
            entry: dict[str, Any] = {"kind": "gpu", "index": index, "name": name}
            try:
                memory = self._memory(handle)
                entry.update(memory_used=int(memory.used), memory_total=int(memory.total))
                entry["utilization"] = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            except Exception as exc:  # a card that fell off the bus still gets a row
                entry.setdefault("memory_used", 0)
                entry.setdefault("memory_total", 0)
                entry["error"] = str(exc)
            devices.append(entry)
        return devices

    def _memory(self, handle: Any) -> Any:
        """Memory info, v2 where the driver has it: its `used` leaves out the memory the
        driver reserves for itself, as nvidia-smi does."""
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            except Exception:
                pass  # an older driver: v1
        return nvml.nvmlDeviceGetMemoryInfo(handle)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml, self._handles = None, []
