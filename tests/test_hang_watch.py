"""A silent stage is hung only if its CPU time stands still: one that holds its
interpreter for a while (a large import, a model load) keeps working."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from voxpipe.daemon.hang import LOOK_S, CpuWatch, process_cpu_s


def _spinning() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _wait_for_cpu(pid: int, seconds: float) -> None:
    start = process_cpu_s(pid)
    assert start is not None
    deadline = time.monotonic() + 60
    while (process_cpu_s(pid) or 0.0) - start < seconds:
        assert time.monotonic() < deadline, "the child used no CPU"
        time.sleep(0.05)


def test_a_process_using_cpu_is_working_and_a_stopped_one_is_not():
    child = _spinning()
    try:
        watch = CpuWatch(child.pid)
        assert watch.working(0.0)  # the first look of a silence: the benefit of the doubt
        _wait_for_cpu(child.pid, 0.2)
        assert watch.working(LOOK_S)  # its CPU time moved between the looks
        os.kill(child.pid, signal.SIGSTOP)
        _wait_for_cpu(child.pid, 0.0)
        watch.working(2 * LOOK_S)  # a look once it is stopped
        assert not watch.working(3 * LOOK_S)  # and a second one: nothing moved
        assert not watch.working(3.5 * LOOK_S)  # within a look's interval: the last verdict holds
        watch.heard()  # a heartbeat: a new silence starts with the benefit of the doubt
        assert watch.working(4 * LOOK_S)
    finally:
        child.kill()
        child.wait()


def test_a_gone_process_is_not_working():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_s(child.pid) is None
    assert not CpuWatch(child.pid).working(0.0)


def test_an_early_look_gives_a_verdict_as_soon_as_a_look_interval_has_passed():
    # The supervisor looks when a stage first misses a beat; by the hang timeout a stopped
    # stage is judged at once rather than given one more look interval.
    child = _spinning()
    try:
        _wait_for_cpu(child.pid, 0.05)
        os.kill(child.pid, signal.SIGSTOP)
        _wait_for_cpu(child.pid, 0.0)
        watch = CpuWatch(child.pid)
        watch.look(0.0)
        watch.look(0.5)  # a second early look keeps the first
        assert not watch.working(LOOK_S)
    finally:
        child.kill()
        child.wait()
