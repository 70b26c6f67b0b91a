"""How many engine processes on this machine are inside a model call right now.

A lone request should use every core, while under load each worker should keep to its
own share. Each engine process holds an exclusive lock on its own file in a shared folder
while it runs a model call; counting the files whose lock is held tells a process how many
others are busy. Locks vanish with their process, so a crashed worker is never counted.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

from voxpipe.stages.engines.base import EngineSettings

_LOG = logging.getLogger(__name__)


def default_dir() -> Path:
    """Beside the daemon's sockets (the runtime directory): one board per user and machine,
    which is what shares the cores."""
    from voxpipe.ipc.sockets import runtime_dir

    return runtime_dir() / "engine-busy"


class BusyBoard:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.name = f"{os.getpid()}.busy"
        self._fd = os.open(self.directory / self.name, os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks this process busy for the duration of the block."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def others_busy(self) -> int:
        """Processes other than this one inside a model call now (a snapshot)."""
        count = 0
        for entry in os.scandir(self.directory):
            if entry.name == self.name or not entry.name.endswith(".busy"):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue  # removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._forget_if_dead(entry)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    count += 1
            finally:
                os.close(fd)
        return count

    @staticmethod
    def _forget_if_dead(entry: os.DirEntry) -> None:
        """Idle files of processes that are gone are removed, so the folder stays small."""
        try:
            pid = int(entry.name.split(".")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        except (ValueError, PermissionError):
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
            os.unlink(self.directory / self.name)


def threads_for(others_busy: int, base: int, most: int, cores: int) -> int:
    """Intra-op threads for the next call: the cores the busy others leave free, at least
    `base` (the configured share) and at most `most`."""
    free = cores - others_busy * base
    return max(base, min(most, free))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CoreShare:
    """An engine process's threads for each model call on a CPU: all the usable cores
    (or `worker.max_threads`) while no other engine process is busy, its configured share
    (`worker.threads`) when they all are. Without a board (a GPU, or no room for its
    folder) every call gets the configured share."""

    def __init__(self, settings: EngineSettings, owner: str) -> None:
        options = settings.options
        self.base = max(1, int(settings.threads))
        self.cores = usable_cores()
        self.most = max(self.base, int(options.get("max_threads", 0) or self.cores))
        self.board: BusyBoard | None = None
        if self.most > self.base and not settings.device.startswith("cuda"):
            try:
                self.board = BusyBoard(Path(options["busy_dir"]) if options.get("busy_dir") else None)
            except OSError as exc:
                _LOG.warning("%s: no busy board (%s); every call uses %d thread(s)", owner, exc, self.base)
        if self.board is None:
            self.most = self.base

    def counts(self) -> list[int]:
        """Every thread count a call may get."""
        return sorted({self.base, self.most})

    @contextlib.contextmanager
    def call(self) -> Iterator[int]:
        """Marks this process busy for a model call; -> the threads the call may use."""
        if self.board is None:
            yield self.base
            return
        with self.board.busy():
            yield threads_for(self.board.others_busy(), self.base, self.most, self.cores)
