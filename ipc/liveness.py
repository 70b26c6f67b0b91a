"""Whether the daemon at a local (ipc://) endpoint still lives, read from its endpoint lock.

The supervisor holds an exclusive flock on `<socket>.lock` for its whole life and touches
the file every `TOUCH_EVERY_S` (`keep_fresh`). A client whose daemon went silent asks
`DaemonLiveness.gone()`: a lock nobody holds (the supervisor exited or was killed) or one
whose file has not been touched for `STALE_AFTER_S` (the supervisor hangs) means the
daemon is gone, so the client fails at once; a held, fresh lock means the daemon lives and
is e.g. restarting its frontend, so the client keeps waiting for it. Locks vanish with
their process, and the check needs neither the daemon's sockets nor its answer.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from voxpipe.ipc import sockets

# The supervisor touches its lock this often; a file STALE_AFTER_S older belongs to a
# supervisor that stopped running (SIGSTOP, a hung machine). Generous: on a loaded machine
# a live supervisor's loop can go seconds without a turn (seen: 3.6 s with both cores
# busy), and a false "gone" fails requests that would have been answered. A killed or
# exited daemon frees its lock at once, so this only bounds how late a hang is noticed.
TOUCH_EVERY_S = 0.5
STALE_AFTER_S = 10.0


def lock_path(endpoint: str) -> Path | None:
    """The lock beside an ipc endpoint's socket; None for tcp (no file a client can see)."""
    path = sockets.ipc_path(endpoint)
    return path.with_name(path.name + ".lock") if path is not None else None


def keep_fresh(fd: int) -> None:
    """The supervisor's sign of life: the lock file's modification time, now."""
    try:
        os.utime(fd)
    except OSError:
        pass  # a read-only or vanished file: clients fall back to their silence timeout


class DaemonLiveness:
    def __init__(self, endpoint: str, stale_after: float = STALE_AFTER_S) -> None:
        self.path = lock_path(endpoint)
        self.stale_after = stale_after
        self._answer: tuple[float, str | None] = (-1.0, None)  # (time.monotonic(), verdict)

    def gone(self) -> str | None:
        """Why the daemon is known to be gone, else None (alive, or it cannot be told:
        a tcp endpoint, a lock this user may not read). Many requests waiting at once
        share one look per 0.2 s."""
        if self.path is None:
            return None
        now = time.monotonic()
        if now - self._answer[0] < 0.2:
            return self._answer[1]
        self._answer = (now, self._look())
        return self._answer[1]

    def _look(self) -> str | None:
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return "its endpoint lock is gone (the daemon exited)"
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                # Held: the supervisor lives, unless it stopped touching the file.
                age = time.time() - os.fstat(fd).st_mtime
                return f"its supervisor has not run for {age:.1f} s" if age > self.stale_after else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return "nobody holds its endpoint lock (the daemon was killed)"
        finally:
            os.close(fd)
