"""The overload benchmark's own logic on a tiny run: every request is answered, busy
answers are counted and timed. (No speed is asserted.)"""
from __future__ import annotations

from voxpipe.ipc.client import run_async
from tests.daemon_proc import Daemon
from tools.bench.overload import overload


def test_tiny_overload_run_accounts_for_every_request(tmp_path):
    with Daemon(tmp_path, workers=1, extra_args=["--engine", "null"], limits={"max_active_requests": 4}) as daemon:
        result = run_async(overload(daemon.endpoint, capacity=4, factor=3))
    assert result.sent == 12
    assert len(result.busy_s) + len(result.finished_s) == 12 and not result.other_errors
    assert len(result.busy_s) >= 4 and len(result.finished_s) >= 4
    assert "| 4 | 12 |" in result.table()
