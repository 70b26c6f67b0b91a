"""An idle daemon sleeps: its stages' loops wait for messages instead of waking on a short
timer (each wakeup of an idle process costs a lone request's model calls on a small
machine), and the supervisor still notices at once when a stage dies."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, settled_status, stage_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WATCH_S = 4.0


def main_thread_wakeups(pid: int) -> int:
    """How often a process's main thread has blocked and woken (voluntary switches)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with Daemon(tmp_path_factory.mktemp("idle"), workers=1, extra_args=["--engine", "null"]) as d:
        yield d


def test_idle_stages_wait_for_messages(daemon):
    with daemon.client() as client:
        client.synthesize("Wake everything once.", "joe")
    pids = {name: pid for name, (pid, _) in stage_pids(settled_status(daemon)).items()}
    before = {name: main_thread_wakeups(pid) for name, pid in pids.items()}
    time.sleep(WATCH_S)
    rates = {name: (main_thread_wakeups(pid) - before[name]) / WATCH_S for name, pid in pids.items()}
    # Worker and merger hear nothing while idle: one timeout a second. The frontend also
    # takes the supervisor's report each heartbeat (2 a second). With short timers they
    # woke 10, 4 and 10 times a second.
    assert rates["w0"] <= 2.5, rates
    assert rates["merger"] <= 2.5, rates
    assert rates["frontend"] <= 5.0, rates


def test_a_dead_stage_is_still_replaced(daemon):
    """The supervisor's loop sleeps until a beat, a signal or a stage's exit (its process
    sentinel): a killed worker is still seen, replaced once, and serves again."""
    before = stage_pids(settled_status(daemon))
    os.kill(before["w0"][0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        with daemon.client() as client:
            status = client.status()
        now = stage_pids(status)
        if now["w0"] != before["w0"] and status["ready"]:
            break
        assert time.monotonic() < deadline, f"w0 not replaced: {status}"
        time.sleep(0.1)
    assert now["w0"][1] == before["w0"][1] + 1
    with daemon.client() as client:
        assert client.synthesize("Still serving.", "joe").samples.size > 0
