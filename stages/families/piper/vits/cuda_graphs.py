"""CUDA graphs for the vocoder at bucketed shapes.

The acoustic part cannot be graphed: its output length depends on the predicted
durations. The vocoder can: per (batch bucket, frames bucket) shape it is captured once
and replayed, which removes the launch overhead of its hundreds of small kernels.

A batch is padded up to its bucket with dummy rows of length 0 and zero latents. The
generator masks every convolution input past each item's length, and items never mix
along the batch axis, so padding rows and frames leaves the real rows' audio as it
would be alone. The capture step is injectable: tests run the cache and padding logic
on the CPU with `eager_capture`, which has a graph's buffer semantics without CUDA.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from voxpipe.stages.engines.base import is_out_of_memory
from voxpipe.stages.families.piper.vits.model import VitsModel, bucket_length

_LOG = logging.getLogger(__name__)

DEFAULT_BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16)

VocodeFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
Replay = Callable[[], Tensor]


def batch_buckets(max_batch: int, base: Sequence[int] = DEFAULT_BATCH_BUCKETS) -> tuple[int, ...]:
    """The bucket sizes below max_batch, then max_batch itself, so every batch has one."""
    if max_batch < 1:
        raise ValueError("max_batch must be positive")
    return tuple(sorted({b for b in base if 0 < b < max_batch} | {max_batch}))


def pick_bucket(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket holding n, or None past the largest."""
    return min((b for b in buckets if b >= n), default=None)


def frame_bucket(frames: int, steps_per_octave: int, max_frames: int) -> int | None:
    """Frames rounded up onto the graph grid, capped at max_frames; None beyond it."""
    if frames > max_frames:
        return None
    return min(bucket_length(frames, steps_per_octave=steps_per_octave), max_frames)


@dataclass
class StaticInputs:
    """The buffers a graph reads: fixed addresses, refilled before every replay."""

    z: Tensor  # [batch, channels, frames]
    lengths: Tensor  # [batch] int64
    sid: Tensor | None  # [batch] int64, multi-speaker voices only


def new_static_inputs(batch: int, channels: int, frames: int, *, speakers: bool,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> StaticInputs:
    return StaticInputs(
        z=torch.zeros(batch, channels, frames, dtype=dtype, device=device),
        lengths=torch.zeros(batch, dtype=torch.long, device=device),
        sid=torch.zeros(batch, dtype=torch.long, device=device) if speakers else None)


def fill_static(static: StaticInputs, z: Tensor, frames: Tensor, sid: Tensor | None) -> None:
    """Copy a batch into the top-left corner of the buffers and zero the rest.

    Zeroing matters: masks multiply, and stale NaN/inf would survive a multiply by 0.
    Dummy rows get length 0 and speaker 0.
    """
    batch, _, width = z.shape
    if batch > static.z.shape[0] or width > static.z.shape[2]:
        raise ValueError(f"batch {tuple(z.shape)} does not fit buffers {tuple(static.z.shape)}")
    static.z.zero_()
    static.z[:batch, :, :width].copy_(z)
    static.lengths.zero_()
    static.lengths[:batch].copy_(frames)
    if static.sid is not None:
        static.sid.zero_()
        if sid is not None:
            static.sid[:batch].copy_(sid)


def masked_vocoder(model: VitsModel) -> VocodeFn:
    """`model.vocode` with masks always on: vocode's "nothing padded" shortcut reads a
    value back to the host, which a graph capture forbids."""
    def run(z: Tensor, lengths: Tensor, sid: Tensor | None) -> Tensor:
        dtype = model.dec.conv_pre.weight.dtype
        g = model.speaker(sid, z.shape[0], z.device)
        return model.dec(z.to(dtype), g=None if g is None else g.to(dtype), lengths=lengths).squeeze(1)
    return run


def eager_capture(fn: VocodeFn, static: StaticInputs) -> Replay:
    """Stand-in for a CUDA graph: each replay recomputes from the static inputs into one
    output buffer that the next replay overwrites, as a graph's output is."""
    out = fn(static.z, static.lengths, static.sid)

    def replay() -> Tensor:
        out.copy_(fn(static.z, static.lengths, static.sid))
        return out
    return replay


class CudaGraphCapture:
    """Captures into CUDA graphs that share one memory pool.

    Sharing is safe here because replays run one at a time on one stream and each output
    is copied out before the next replay; the static inputs live outside the pool.
    """

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, fn: VocodeFn, static: StaticInputs) -> Replay:
        # Warm-up on a side stream, as capture requires: lazy initialisation (cuDNN
        # handles, autotuning, workspace growth) must not happen inside the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(static.z, static.lengths, static.sid)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn(static.z, static.lengths, static.sid)

        def replay() -> Tensor:
            graph.replay()
            return out
        return replay


@dataclass
class _Entry:
    static: StaticInputs
    replay: Replay


class GraphedVocoder:
    """`model.vocode` that replays a captured graph per bucketed shape.

    Keeps at most `max_graphs` graphs (least recently used go first: each holds device
    memory) and runs eagerly for batches or lengths past the largest bucket, and for
    shapes whose capture failed.
    """

    def __init__(self, model: VitsModel, *, max_batch: int = 16, max_frames: int = 1024,
                 steps_per_octave: int = 4, max_graphs: int = 16,
                 capture: Callable[[VocodeFn, StaticInputs], Replay] | None = None,
                 batch_bucket_sizes: Sequence[int] = DEFAULT_BATCH_BUCKETS) -> None:
        if max_graphs < 1:
            raise ValueError("max_graphs must be positive")
        self.model = model
        self.buckets = batch_buckets(max_batch, batch_bucket_sizes)
        self.max_frames = max_frames
        self.steps_per_octave = steps_per_octave
        self.max_graphs = max_graphs
        self._capture = capture if capture is not None else CudaGraphCapture()
        self._fn = masked_vocoder(model)
        self._graphs: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._failed: set[tuple[int, int]] = set()
        self.captures = self.replays = self.eager_calls = self.evictions = 0

    def shape_for(self, batch: int, frames: int) -> tuple[int, int] | None:
        """The (batch, frames) bucket a batch runs at, or None to run eagerly."""
        b = pick_bucket(batch, self.buckets)
        f = frame_bucket(frames, self.steps_per_octave, self.max_frames)
        return None if b is None or f is None else (b, f)

    def cached_shapes(self) -> list[tuple[int, int]]:
        """Captured shapes, least recently used first."""
        return list(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def __call__(self, z: Tensor, frames: Tensor, sid: Tensor | None = None) -> Tensor:
        """z [B, C, F], frames [B] -> audio [B, F * hop], a tensor of its own."""
        batch, _, width = z.shape
        key = self.shape_for(batch, width)
        entry = None if key is None or key in self._failed else self._entry(key, z)
        if entry is None:
            self.eager_calls += 1
            return self.model.vocode(z, frames, sid=sid)
        fill_static(entry.static, z, frames, sid)
        out = entry.replay()
        self.replays += 1
        # A copy: the next replay overwrites the graph's output buffer.
        return out[:batch, :width * self.model.hop_length].clone()

    def _entry(self, key: tuple[int, int], like: Tensor) -> _Entry | None:
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            return entry
        static = new_static_inputs(key[0], like.shape[1], key[1], speakers=self.model.cfg.n_speakers > 1,
                                   dtype=like.dtype, device=like.device)
        try:
            replay = self._capture(self._fn, static)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                self.clear()  # give the graphs' memory back; the worker retries smaller
                raise
            _LOG.warning("vocoder graph for shape %s failed to capture (%s); running it eagerly", key, exc)
            self._failed.add(key)
            return None
        self.captures += 1
        entry = self._graphs[key] = _Entry(static, replay)
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
            self.evictions += 1
        return entry
