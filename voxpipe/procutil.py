"""Process plumbing shared by every stage: dying with the parent, titles, signals, file locks."""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

PR_SET_PDEATHSIG = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> tuple[int, float] | None:
    """(session id, user + system CPU seconds) of a process (Linux), None if it is gone
    or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces
    return int(fields[3]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def die_with_parent(expected_parent: int) -> None:
    """Ask the kernel to SIGKILL us when our parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:
            _watch_parent(expected_parent)
    if os.getppid() != expected_parent:
        os._exit(1)  # the parent died before the signal was armed


def _watch_parent(expected_parent: int) -> None:
    def watch() -> None:
        import time
        while os.getppid() == expected_parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def ignore_interrupts() -> None:
    """Stages leave SIGINT (a terminal's ^C reaches the whole group) to the supervisor,
    which drains and then stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if need be): processes building the same
    cached file take turns, and the later ones find it built."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
