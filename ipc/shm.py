"""Shared-memory pools: fixed-size slots handed out by handle, recycled by generation.

One pool per producing process (each worker, the merger), created by the supervisor
once per run and attached by the producer and its consumer. The file lives in /dev/shm
and is never registered with multiprocessing's resource tracker (which would unlink it
when any child exits). Its space is reserved with posix_fallocate, so a full /dev/shm
fails at creation with a clear error instead of a SIGBUS later.

Slot protocol: only the producer moves a slot FREE -> WRITING -> READY; only the
consumer moves READY -> FREE (after checking the generation). A handle whose generation
no longer matches is stale and is refused. Orphans are reclaimed: WRITING slots when a
new producer attaches (its predecessor died mid-write), and READY slots whose request
deadline passed long ago, and the READY slots of a producer that died, once its
consumer has read every message the producer managed to send (`reclaim_owner`).
A producer that finds the pool full waits for its consumer with `put_waiting`.

The supervisor holds an exclusive flock on every pool it created; a pool file nobody
holds a lock on belongs to a daemon that is gone, and is removed at the next start.
"""
from __future__ import annotations

import fcntl
import math
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxpipe.ipc.messages import ShmHandle

SHM_DIR = Path("/dev/shm")
PREFIX = "voxpipe-"
_MAGIC = b"VOXPOOL1"
_HEADER_BYTES = 64
_META_DTYPE = np.dtype([("state", "<u4"), ("generation", "<u4"), ("span", "<u4"), ("owner", "<u4"),
                        ("deadline", "<f8")])
FREE, WRITING, READY, CONTINUED = 0, 1, 2, 3
ORPHAN_GRACE_S = 30.0  # how long past its deadline a READY slot may wait for its consumer
WAIT_RETRY_S = 0.005  # put_waiting: how often to look for free slots again


class PoolError(Exception):
    """A pool could not be created or attached (e.g. /dev/shm is full)."""


class PoolFull(PoolError):
    """No run of free slots is large enough right now."""


class PoolTooSmall(PoolFull):
    """The tensor is larger than the whole pool: no amount of waiting makes it fit."""


class PoolWaitTimeout(PoolFull):
    """The pool stayed full until the deadline passed."""


class StaleHandle(PoolError):
    """A handle whose slot was recycled (or never published)."""


@dataclass(frozen=True)
class PoolSpec:
    name: str  # edge name, e.g. "w0" or "merger"
    path: str
    slot_bytes: int
    slots: int


def pool_path(run_id: str, edge: str) -> Path:
    return SHM_DIR / f"{PREFIX}{run_id}-{edge}"


def _layout(slot_bytes: int, slots: int) -> tuple[int, int]:
    meta_bytes = slots * _META_DTYPE.itemsize
    data_offset = _HEADER_BYTES + ((meta_bytes + 4095) // 4096) * 4096
    return data_offset, data_offset + slot_bytes * slots


class ShmPool:
    """One attached pool. `create` (supervisor) or `attach` (producer or consumer)."""

    def __init__(self, spec: PoolSpec, fd: int, owner: bool) -> None:
        self.spec = spec
        self._fd = fd
        self.owner = owner
        self._data_offset, total = _layout(spec.slot_bytes, spec.slots)
        self._map = mmap.mmap(fd, total)
        self._meta = np.ndarray((spec.slots,), dtype=_META_DTYPE, buffer=self._map, offset=_HEADER_BYTES)
        self._cursor = 0
        self._pid = os.getpid()
        if not owner:
            os.close(fd)
            self._fd = -1

    # ---- lifetime ---------------------------------------------------------------------
    @classmethod
    def create(cls, spec: PoolSpec) -> "ShmPool":
        _, total = _layout(spec.slot_bytes, spec.slots)
        try:
            fd = os.open(spec.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise PoolError(f"cannot create shared memory {spec.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.posix_fallocate(fd, 0, total)
        except OSError as exc:
            os.close(fd)
            os.unlink(spec.path)
            raise PoolError(f"cannot reserve {total / 2**20:.1f} MiB of shared memory for pool {spec.name!r} "
                            f"in {SHM_DIR}: {exc.strerror} (is /dev/shm full?)") from exc
        pool = cls(spec, fd, owner=True)
        pool._map[:_HEADER_BYTES] = _MAGIC.ljust(_HEADER_BYTES, b"\0")
        return pool

    @classmethod
    def attach(cls, spec: PoolSpec, producer: bool = False) -> "ShmPool":
        try:
            fd = os.open(spec.path, os.O_RDWR)
        except OSError as exc:
            raise PoolError(f"cannot attach shared memory {spec.path}: {exc.strerror}") from exc
        pool = cls(spec, fd, owner=False)
        if bytes(pool._map[:len(_MAGIC)]) != _MAGIC:
            pool.close()
            raise PoolError(f"{spec.path} is not a voxpipe pool")
        if producer:
            pool.reclaim(writing=True)
        return pool

    def close(self) -> None:
        self._meta = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes with the process
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        try:
            os.unlink(self.spec.path)
        except FileNotFoundError:
            pass

    # ---- producer side ------------------------------------------------------------------
    def allocate(self, nbytes: int, dtype: str, shape: list[int], deadline: float) -> tuple[ShmHandle, np.ndarray]:
        """Reserve slots for a tensor; returns its handle and a writable array on it."""
        span = max(1, math.ceil(nbytes / self.spec.slot_bytes))
        if span > self.spec.slots:
            raise PoolTooSmall(f"{nbytes} bytes exceed pool {self.spec.name!r} ({self.spec.slots * self.spec.slot_bytes} bytes)")
        start = self._find_run(span)
        if start is None:
            self.reclaim(writing=False)
            start = self._find_run(span)
            if start is None:
                raise PoolFull(f"pool {self.spec.name!r} has no {span} free slots")
        meta = self._meta
        generation = int(meta["generation"][start]) + 1 & 0xFFFFFFFF
        meta["state"][start + 1:start + span] = CONTINUED
        meta["span"][start] = span
        meta["deadline"][start] = deadline
        meta["owner"][start] = self._pid
        meta["generation"][start] = generation
        meta["state"][start] = WRITING
        self._cursor = (start + span) % self.spec.slots
        handle = ShmHandle(self.spec.name, start, generation, self._data_offset + start * self.spec.slot_bytes,
                           nbytes, dtype, list(shape))
        return handle, self._array(handle)

    def publish(self, handle: ShmHandle) -> None:
        self._check(handle, WRITING)
        self._meta["state"][handle.slot] = READY

    def put(self, array: np.ndarray, deadline: float) -> ShmHandle:
        """Copy an array into the pool and publish it."""
        array = np.ascontiguousarray(array)
        handle, view = self.allocate(array.nbytes, array.dtype.str, list(array.shape), deadline)
        view[...] = array
        self.publish(handle)
        return handle

    def put_waiting(self, array: np.ndarray, deadline: float, retry_s: float = WAIT_RETRY_S) -> ShmHandle:
        """`put`, waiting for the consumer to free slots until `deadline` (time.monotonic();
        also the slots' own deadline). Raises PoolTooSmall at once if the array can never
        fit, PoolWaitTimeout once the deadline passes with the pool still full."""
        while True:
            try:
                return self.put(array, deadline)
            except PoolTooSmall:
                raise
            except PoolFull as exc:
                if time.monotonic() >= deadline:
                    raise PoolWaitTimeout(f"{exc}; waited until the deadline") from None
                time.sleep(retry_s)

    def _find_run(self, span: int) -> int | None:
        states = self._meta["state"]
        n = self.spec.slots
        free = states == FREE
        for begin in (self._cursor, 0):
            idx = begin
            while idx + span <= n:
                window = free[idx:idx + span]
                if window.all():
                    return idx
                idx += int(np.flatnonzero(~window)[-1]) + 1
        return None

    def reclaim(self, writing: bool) -> int:
        """Free orphaned slots; returns how many allocations were reclaimed."""
        meta = self._meta
        heads = np.flatnonzero((meta["state"] == WRITING) if writing else
                               ((meta["state"] == READY) & (meta["deadline"] + ORPHAN_GRACE_S < time.monotonic())))
        for slot in heads:
            self._free(int(slot))
        return len(heads)

    def reclaim_owner(self, pid: int, keep: set[tuple[int, int]]) -> int:
        """Free the unread slots a dead producer left, except (slot, generation) pairs the
        consumer still holds handles to; returns how many were freed."""
        meta = self._meta
        heads = np.flatnonzero(((meta["state"] == READY) | (meta["state"] == WRITING)) & (meta["owner"] == pid))
        freed = 0
        for slot in heads:
            if (int(slot), int(meta["generation"][slot])) not in keep:
                self._free(int(slot))
                freed += 1
        return freed

    # ---- consumer side -----------------------------------------------------------------
    def view(self, handle: ShmHandle) -> np.ndarray:
        """A read-only array over a published tensor; copy it before release()."""
        self._check(handle, READY)
        array = self._array(handle)
        array.flags.writeable = False
        return array

    def read(self, handle: ShmHandle) -> np.ndarray:
        """Copy a published tensor out and release its slots."""
        data = self.view(handle).copy()
        self.release(handle)  # checks the generation again: a recycled slot means torn data
        return data

    def release(self, handle: ShmHandle) -> None:
        self._check(handle, READY)
        self._free(handle.slot)

    # ---- shared ------------------------------------------------------------------------
    def _free(self, slot: int) -> None:
        meta = self._meta
        span = max(1, int(meta["span"][slot]))
        meta["state"][slot + 1:slot + span] = FREE
        meta["state"][slot] = FREE

    def _check(self, handle: ShmHandle, state: int) -> None:
        if handle.pool != self.spec.name or not 0 <= handle.slot < self.spec.slots:
            raise StaleHandle(f"handle for pool {handle.pool!r} slot {handle.slot} is not in {self.spec.name!r}")
        meta = self._meta[handle.slot]
        if int(meta["generation"]) != handle.generation or int(meta["state"]) != state:
            raise StaleHandle(f"stale handle: pool {self.spec.name!r} slot {handle.slot} generation "
                              f"{handle.generation} (slot is at {int(meta['generation'])})")

    def _array(self, handle: ShmHandle) -> np.ndarray:
        expected = handle.offset == self._data_offset + handle.slot * self.spec.slot_bytes
        if not expected or handle.nbytes > int(self._meta["span"][handle.slot]) * self.spec.slot_bytes:
            raise StaleHandle("handle offset or size does not match its slots")
        dtype = np.dtype(handle.dtype)
        count = int(np.prod(handle.shape)) if handle.shape else 1
        if count * dtype.itemsize != handle.nbytes:
            raise StaleHandle("handle shape does not match its byte count")
        return np.ndarray(tuple(handle.shape), dtype=dtype, buffer=self._map, offset=handle.offset)

    def usage(self) -> dict[str, int]:
        states = self._meta["state"]
        return {"slots": self.spec.slots, "free": int((states == FREE).sum()), "slot_bytes": self.spec.slot_bytes}


def remove_stale_pools(directory: Path = SHM_DIR) -> list[str]:
    """Unlink pools whose creating supervisor is gone (nobody holds their lock)."""
    removed = []
    for path in directory.glob(f"{PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live daemon holds it
        try:
            os.unlink(path)
            removed.append(path.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
