"""Running a TensorRT vocoder plan with pycuda device buffers.

TensorRT and pycuda are imported lazily (`import_tensorrt`) so that the rest of voxpipe
imports without them. pycuda works in the device's primary context, the one torch uses,
retained explicitly (not `pycuda.autoinit`, which would create a second context): device
pointers from torch and from pycuda are then valid in both, and the latents go from the
acoustic part to TensorRT by a device-to-device copy.
"""
from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from voxpipe.stages.engines.base import EngineError
from voxpipe.stages.families.piper.engines.tensorrt_plan import ProfileSpec, choose_profile

INSTALL_HINT = "pip install 'voxpipe[gpu]' (or: pip install tensorrt pycuda)"


def import_tensorrt() -> tuple[ModuleType, ModuleType]:
    """(tensorrt, pycuda.driver), or EngineError saying what to install."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"engine 'tensorrt' needs the tensorrt and pycuda packages ({exc}); "
                          f"{INSTALL_HINT}") from exc
    return trt, cuda


class PlanLoadError(Exception):
    """The runtime rejected a plan (corrupt, or built by another TensorRT or GPU)."""


def grown_capacity(current: int, needed: int, minimum: int = 1 << 16) -> int:
    """Bytes to allocate for `needed`: doubling past the current size, so that a run of
    slowly growing shapes reallocates a few times, not on every call."""
    if needed <= current:
        return current
    return max(needed, 2 * current, minimum)


class _DeviceBuffer:
    """One device allocation that grows on demand."""

    def __init__(self, cuda: ModuleType) -> None:
        self._cuda = cuda
        self.alloc: Any = None
        self.capacity = 0

    def ensure(self, nbytes: int) -> int:
        """Make room for nbytes; returns the device address."""
        size = grown_capacity(self.capacity, nbytes)
        if size != self.capacity or self.alloc is None:
            self.free()
            self.alloc = self._cuda.mem_alloc(size)
            self.capacity = size
        return int(self.alloc)

    def free(self) -> None:
        if self.alloc is not None:
            self.alloc.free()
            self.alloc = None
            self.capacity = 0


class TrtVocoder:
    """A deserialized vocoder plan: latents [B, C, F] on the GPU -> audio [B, F * hop].

    One execution context switches between the plan's optimization profiles; calls are
    synchronous (one batch at a time, as the worker runs them).
    """

    def __init__(self, trt: ModuleType, cuda: ModuleType, plan: bytes, specs: Sequence[ProfileSpec],
                 device_index: int = 0) -> None:
        self._trt, self._cuda = trt, cuda
        self.specs = list(specs)
        cuda.init()
        self._ctx: Any = cuda.Device(device_index).retain_primary_context()
        try:
            self._load(plan)
        except BaseException:
            self._ctx.detach()
            self._ctx = None
            raise

    def _load(self, plan: bytes) -> None:
        trt = self._trt
        with self._active():
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise PlanLoadError("TensorRT could not deserialize the plan")
            if self.engine.num_optimization_profiles != len(self.specs):
                raise PlanLoadError(f"plan has {self.engine.num_optimization_profiles} profiles, "
                                    f"expected {len(self.specs)}")
            self.context = self.engine.create_execution_context()
            self.stream = self._cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        outputs = [n for n in names if not is_input[n]]
        if set(self.inputs) - {"z", "frames", "sid"} or "z" not in self.inputs or outputs != ["audio"]:
            raise PlanLoadError(f"not a vocoder plan: inputs {self.inputs}, outputs {outputs}")
        self.output = outputs[0]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        if self.dtypes["z"] != np.float32:
            raise PlanLoadError(f"plan takes z as {self.dtypes['z']}, expected float32")
        self._device = {n: _DeviceBuffer(self._cuda) for n in names}
        self._host: dict[str, np.ndarray] = {}  # page-locked staging, grown on demand
        self._profile = -1

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def covers(self, batch: int, frames: int) -> bool:
        return choose_profile(self.specs, batch, frames) is not None

    def _staging(self, name: str, count: int) -> np.ndarray:
        """A page-locked host array of at least `count` elements (async copies need one)."""
        buf = self._host.get(name)
        if buf is None or buf.size < count:
            buf = self._host[name] = self._cuda.pagelocked_empty(grown_capacity(0 if buf is None else buf.size,
                                                                               count, 1), self.dtypes[name])
        return buf[:count]

    def run(self, z: torch.Tensor, frames: torch.Tensor, sid: torch.Tensor | None) -> np.ndarray:
        """z [B, C, F] float32 on this GPU, frames [B], sid [B] or None -> audio, host float32."""
        batch, _, width = z.shape
        profile = choose_profile(self.specs, batch, width)
        if profile is None:
            raise ValueError(f"no optimization profile covers batch {batch} x {width} frames")
        z = z.float().contiguous()
        small = {"frames": frames.cpu().numpy()}  # tiny: staged through the host
        if "sid" in self.inputs:
            small["sid"] = (sid.cpu().numpy() if sid is not None else np.zeros(batch, dtype=np.int64))
        # pycuda's stream knows nothing of torch's: z must be complete before it is copied.
        torch.cuda.current_stream().synchronize()
        cuda, ctx, stream = self._cuda, self.context, self.stream
        with self._active():
            if profile != self._profile:
                ctx.set_optimization_profile_async(profile, stream.handle)
                self._profile = profile
            shapes = {"z": tuple(z.shape), **{name: (batch,) for name in small}}
            for name, shape in shapes.items():
                if not ctx.set_input_shape(name, shape):
                    raise RuntimeError(f"TensorRT rejected shape {shape} for {name!r} in profile {profile}")
            out_shape = tuple(ctx.get_tensor_shape(self.output))
            out_count = int(np.prod(out_shape))
            address = self._device["z"].ensure(z.numel() * 4)
            cuda.memcpy_dtod_async(address, z.data_ptr(), z.numel() * 4, stream)
            ctx.set_tensor_address("z", address)
            for name, values in small.items():
                host = self._staging(name, batch)
                host[:] = values.astype(self.dtypes[name], copy=False)
                address = self._device[name].ensure(host.nbytes)
                cuda.memcpy_htod_async(address, host, stream)
                ctx.set_tensor_address(name, address)
            out_address = self._device[self.output].ensure(out_count * self.dtypes[self.output].itemsize)
            ctx.set_tensor_address(self.output, out_address)
            if not ctx.execute_async_v3(stream.handle):
                raise RuntimeError("TensorRT execution failed")
            out = self._staging(self.output, out_count)
            cuda.memcpy_dtoh_async(out, out_address, stream)
            stream.synchronize()
        # A copy: the staging buffer is reused by the next call.
        return np.array(out.reshape(out_shape), dtype=np.float32)

    def close(self) -> None:
        """Free the buffers, context and engine inside the context they belong to."""
        if self._ctx is None:
            return
        with self._active():
            for buf in self._device.values():
                buf.free()
            self._host.clear()
            self.context = None
            self.engine = None
            self.stream = None
        self._ctx.detach()  # our retain only: torch keeps the primary context alive
        self._ctx = None
