"""A client reads whether its local daemon lives from the endpoint lock: nobody holding
it, or its file gone, means the daemon was killed or exited; held but untouched for a
while means its supervisor hangs; held and fresh means it lives (e.g. restarting its
frontend, which a waiting client must sit out)."""
from __future__ import annotations

import fcntl
import os
import time

from voxpipe.ipc.liveness import STALE_AFTER_S, DaemonLiveness, keep_fresh, lock_path


def held_lock(path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the supervisor holds it (another open file: it conflicts)
    keep_fresh(fd)
    return fd


def test_a_held_fresh_lock_is_a_live_daemon(tmp_path):
    endpoint = f"ipc://{tmp_path / 'vp.sock'}"
    fd = held_lock(lock_path(endpoint))
    try:
        assert DaemonLiveness(endpoint).gone() is None
    finally:
        os.close(fd)


def test_a_lock_nobody_holds_or_no_lock_is_a_gone_daemon(tmp_path):
    endpoint = f"ipc://{tmp_path / 'vp.sock'}"
    assert "exited" in DaemonLiveness(endpoint).gone()
    os.close(held_lock(lock_path(endpoint)))  # closing its file frees the lock, as a killed process does
    assert "killed" in DaemonLiveness(endpoint).gone()


def test_a_held_lock_not_touched_lately_is_a_hung_daemon(tmp_path):
    endpoint = f"ipc://{tmp_path / 'vp.sock'}"
    fd = held_lock(lock_path(endpoint))
    try:
        past = time.time() - 2 * STALE_AFTER_S
        os.utime(fd, (past, past))
        assert "has not run" in DaemonLiveness(endpoint).gone()
        keep_fresh(fd)
        assert DaemonLiveness(endpoint).gone() is None
    finally:
        os.close(fd)


def test_a_tcp_endpoint_cannot_be_told():
    assert DaemonLiveness("tcp://127.0.0.1:5555").gone() is None
