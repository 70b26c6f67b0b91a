"""TensorRT plan bookkeeping that needs no GPU: optimization profiles, the plan cache key,
and the plan files themselves.

A plan is only valid for the GPU model, compute capability and TensorRT version it was
built with, and only for the voice, precision and shape ranges it was built from; the
cache key covers all of them, so a change of any one builds a fresh plan.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

# Bump when the exported vocoder graph or the profile layout changes meaning.
PLAN_FORMAT = 1


@dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: (min, opt, max) of the batch and the frames axes."""

    batch: tuple[int, int, int]
    frames: tuple[int, int, int]

    def covers(self, batch: int, frames: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.frames[0] <= frames <= self.frames[2]


def _ranges(edges: Sequence[int]) -> list[tuple[int, int]]:
    """[e0, e1, e2, ...] -> [(1, e0), (e0 + 1, e1), ...]: contiguous, inclusive ranges."""
    out: list[tuple[int, int]] = []
    low = 1
    for edge in edges:
        out.append((low, edge))
        low = edge + 1
    return out


def frame_edges(max_frames: int, min_frames: int = 16, growth: int = 2) -> list[int]:
    """Upper ends of the frame ranges: min_frames, then x growth each (an octave for 2)
    up to max_frames, which always ends the last range."""
    if max_frames < 1 or min_frames < 1 or growth < 2:
        raise ValueError("need max_frames >= 1, min_frames >= 1 and growth >= 2")
    edges: list[int] = []
    edge = min(min_frames, max_frames)
    while edge < max_frames:
        edges.append(edge)
        edge *= growth
    edges.append(max_frames)
    return edges


def profile_specs(max_batch: int, max_frames: int, *, batch_buckets: Sequence[int] = (),
                  min_frames: int = 16, growth: int = 2) -> list[ProfileSpec]:
    """Profiles covering every batch 1..max_batch and every length 1..max_frames.

    The batch axis splits at `batch_buckets` (default: one range), the frames axis per
    `growth` (an octave by default): a range's kernels are tuned at its `opt` shape, so
    narrower ranges run closer to their best at the price of a longer build. `opt` is
    the range's upper end for the batch (batches fill up under load) and 3/4 of it for
    frames (lengths are spread within a range).
    """
    if max_batch < 1:
        raise ValueError("max_batch must be positive")
    batch_edges = sorted({b for b in batch_buckets if 0 < b < max_batch} | {max_batch})
    specs = []
    for b_lo, b_hi in _ranges(batch_edges):
        for f_lo, f_hi in _ranges(frame_edges(max_frames, min_frames, growth)):
            f_opt = max(f_lo, (3 * f_hi) // 4)
            specs.append(ProfileSpec(batch=(b_lo, b_hi, b_hi), frames=(f_lo, f_opt, f_hi)))
    return specs


def choose_profile(specs: Sequence[ProfileSpec], batch: int, frames: int) -> int | None:
    """Index of the narrowest profile covering (batch, frames), or None if none does."""
    best: tuple[int, int] | None = None
    for index, spec in enumerate(specs):
        if spec.covers(batch, frames):
            width = (spec.batch[2] - spec.batch[0] + 1) * (spec.frames[2] - spec.frames[0] + 1)
            if best is None or width < best[0]:
                best = (width, index)
    return None if best is None else best[1]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized plan depends on."""

    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str
    voice_sha256: str
    precision: str
    profiles: tuple[ProfileSpec, ...]

    def digest(self) -> str:
        fields = asdict(self)
        fields["format"] = PLAN_FORMAT
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def file_name(self, voice_name: str) -> str:
        # The voice name only helps people find files; the digest is what identifies it.
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in voice_name)[:64]
        return f"{safe}-{self.digest()[:32]}.plan"


def default_plan_dir() -> Path:
    """$VOXPIPE_TRT_CACHE_DIR, else voxpipe/tensorrt under $XDG_CACHE_HOME or ~/.cache
    (the systemd unit points XDG_CACHE_HOME into its CacheDirectory)."""
    explicit = os.environ.get("VOXPIPE_TRT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "voxpipe" / "tensorrt"


def write_plan(path: Path, data: bytes) -> None:
    """Write atomically: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_plan(path: Path) -> bytes | None:
    """The cached plan, or None if there is none (or an empty one)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data or None


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Exclusive lock beside a plan, so workers on GPUs of one model build it once: the
    second waits here and then finds the first one's plan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def profile_shape(shape: Sequence[int], spec: ProfileSpec, which: int) -> tuple[int, ...]:
    """An input's dims for one corner of a profile (which: 0 min, 1 opt, 2 max).

    Dynamic dims (-1) are axis 0, the batch, and for the latents axis 2, the frames;
    fixed dims (channels) stay as they are.
    """
    dims = []
    for axis, dim in enumerate(shape):
        if dim >= 0:
            dims.append(int(dim))
        elif axis == 0:
            dims.append(spec.batch[which])
        elif axis == 2:
            dims.append(spec.frames[which])
        else:
            raise ValueError(f"unexpected dynamic axis {axis} in input shape {tuple(shape)}")
    return tuple(dims)


def specs_to_json(specs: Sequence[ProfileSpec]) -> str:
    return json.dumps([{"batch": list(s.batch), "frames": list(s.frames)} for s in specs])


def specs_from_json(text: str) -> list[ProfileSpec]:
    return [ProfileSpec(batch=tuple(d["batch"]), frames=tuple(d["frames"]))  # type: ignore[arg-type]
            for d in json.loads(text)]
