"""Whether a stage whose heartbeats stopped is hung or only busy holding the interpreter.

A stage's heartbeats come from a thread of its own, so they stop whenever one call holds
the interpreter: a stopped or deadlocked process, but also a large import. The first
Piper voice that needs its graph split imports torch in the worker, which holds the
interpreter for 1.3-1.5 s on a quiet 2-core machine and 1.8-2.3 s with both cores busy,
close to the hang timeout (2.5 s): under load such a worker was killed as hung while it
loaded, again on every retry. A silent stage whose CPU time still moves is working, not
hung; one whose CPU time stands still is hung.
"""
from __future__ import annotations

from voxpipe.procutil import process_cpu

LOOK_S = 1.0  # how long apart two looks at a silent stage's CPU time are
MIN_SHARE = 0.05  # of one core, between two looks: less is standing still


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, None if it is gone or unreadable."""
    found = process_cpu(pid)
    return None if found is None else found[1]


class CpuWatch:
    """Looks at one process's CPU time while it is silent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._look: tuple[float, float] | None = None  # (when, CPU seconds) at the last look
        self._moved = True

    def heard(self) -> None:
        """A heartbeat came: the next silence starts afresh."""
        self._look = None

    def look(self, now: float) -> None:
        """Take a silence's first look early (from its first missed beat), so that a verdict
        is ready when the hang timeout comes instead of one look later."""
        if self._look is None:
            self.working(now)

    def working(self, now: float) -> bool:
        """Whether the silent process used CPU between the last two looks (at least
        LOOK_S apart; the first look of a silence gives it the benefit of the doubt)."""
        cpu = process_cpu_s(self.pid)
        if cpu is None:
            return False
        if self._look is None:
            self._look, self._moved = (now, cpu), True
        elif now - self._look[0] >= LOOK_S:
            self._moved = cpu - self._look[1] >= MIN_SHARE * (now - self._look[0])
            self._look = (now, cpu)
        return self._moved
