"""The per-request timeline (`voxpipe say --timeline`, the `timeline` option): every stage
reports its steps for the request, on the one clock all processes share."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

TEXT = "The quick brown fox jumps over the lazy dog. It ran away!"


def test_a_streamed_request_reports_each_stage(shared_daemon):
    with shared_daemon.client() as client:
        stream = client.stream(TEXT, "joe", timeline=True)
        fragments = list(stream)
        timeline = stream.timeline
        plain = client.stream("Hello there.", "joe")
        list(plain)
    steps = {(e.stage, e.what.split(":")[0].split(" (")[0]) for e in timeline}
    assert {("frontend", "plan"), ("worker", "queue"), ("worker", "engine"), ("worker", "to the merger"),
            ("merger", "merge"), ("frontend", "relay")} <= steps
    assert sum(e.stage == "socket" for e in timeline) == len(fragments)  # each fragment's arrival
    assert all(e.start <= e.end for e in timeline)
    plan = min(e.start for e in timeline if e.stage == "frontend")
    assert all(e.start >= plan for e in timeline if e.stage == "worker" and e.what != "queue")
    assert {e.seq for e in timeline if e.stage == "worker"} == {0, 1}  # both chunks' steps
    assert plain.timeline == []  # off unless asked for


def test_say_prints_the_timeline(shared_daemon, tmp_path):
    out = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "say", "--endpoint", shared_daemon.endpoint,
                          "--timeline", "-o", str(tmp_path / "x.wav"), "Hello there."],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for step in ("plan: first chunk", "queue (chunk 0)", "engine", "merge", "relay", "fragment 0 to the client"):
        assert step in out.stderr
