"""Shared memory is gone after a clean stop, and after a SIGKILL of the whole daemon
followed by a new start."""
from __future__ import annotations

import time

import pytest

from tests.daemon_proc import Daemon, our_segments

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # each test starts and stops daemons of its own


def run_id(daemon: Daemon) -> str:
    with daemon.client() as client:
        return client.status()["run_id"]


def test_sigterm_leaves_nothing(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()
    rid = run_id(daemon)
    assert any(rid in name for name in our_segments())
    with daemon.client() as client:
        client.synthesize("One request, so the pools were used.", "joe")
    assert daemon.stop() == 0
    assert not any(rid in name for name in our_segments())
    assert not (tmp_path / "vp.sock").exists()


def test_sigkill_then_restart_removes_the_leftovers(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()
    rid = run_id(daemon)
    pids = daemon.pids()
    daemon.kill()
    leftovers = {name for name in our_segments() if rid in name}
    assert leftovers, "a SIGKILLed daemon cannot clean up; the next start must"
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):  # every process of the killed daemon gone, its locks with it
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.02)
    second = Daemon(tmp_path, workers=1).start()
    try:
        assert not any(rid in name for name in our_segments())
        with second.client() as client:
            assert client.synthesize("Back again.", "joe").duration > 0.3
    finally:
        second.stop()
    assert all(not _alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return False
