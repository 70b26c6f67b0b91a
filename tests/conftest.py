"""One read-only daemon shared by the tests that only send it requests and check the
answers, so each of them does not start (and pay for) a five-process daemon of its own.

`shared_daemon` is session-scoped: under `pytest -n 2 --dist loadfile` that means once per
test process. It runs the default configuration with two workers and the HTTP gateway on
a free port (`shared_daemon.url`). A test that uses it must leave it as it found it: no
stage killed or restarted, no config or voice changed, no request left running, and no
reliance on counters that start at zero (other tests have used it before). Every such test
is checked for that on its way out (`_shared_daemon_left_as_found`): a test that breaks the
rule fails there, by name, instead of the next test failing for no visible reason.

Tests that kill, stop or reconfigure start a daemon of their own (tests/daemon_proc.py).

Markers (registered in pyproject.toml): `slow` (more than a few seconds, or boots a
daemon of its own), `e2e` (drives a real daemon), `gpu` (needs CUDA), `reference`
(compares against an upstream implementation or golden data). The fast tier is
`pytest -m "not slow"`."""
from __future__ import annotations

import pytest

from tests.daemon_proc import http_daemon, stage_pids, wait_idle


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory):
    """A running daemon (default config, 2 workers, HTTP at `.url`), read-only for its users."""
    with http_daemon(tmp_path_factory.mktemp("shared-daemon"), workers=2) as daemon:
        yield daemon


@pytest.fixture(autouse=True)
def _shared_daemon_left_as_found(request):
    """For tests that use `shared_daemon` (directly or through a fixture): after the test,
    every request it made is answered or cancelled, and no stage was replaced."""
    if "shared_daemon" not in request.fixturenames:
        yield
        return
    daemon = request.getfixturevalue("shared_daemon")
    before = stage_pids(wait_idle(daemon))
    yield
    after = stage_pids(wait_idle(daemon))
    assert after == before, f"a test changed the shared daemon's processes: {before} -> {after}"
