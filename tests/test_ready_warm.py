"""Ready means warm: a preloaded voice has had its level measured (or read from the cache)
and one sentence run down each path a chunk takes before its worker reports ready, so
the first request pays nothing that the second does not."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_preloaded_voices_are_warm_when_the_daemon_is_ready(shared_daemon):
    with shared_daemon.client() as client:
        status = client.wait_ready(60)
    workers = [p for p in status["processes"] if p["role"] == "worker"]
    assert workers
    for worker in workers:
        joe = worker["stats"]["voice_details"]["joe"]  # joe is preloaded by default
        assert joe["warm"] is True
        assert joe["level_gain"] > 1.0  # the bundled voice is quieter than Piper's level
