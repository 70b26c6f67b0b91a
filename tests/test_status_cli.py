"""`voxpipe status`: --json parses and carries the same content as the client's status
query and the table; last-minute throughput and latency agree with the requests made;
one log line per request."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys

import pytest

from voxpipe.ipc.errors import VoxpipeError
from tests.daemon_proc import ROOT, Daemon, settled_status

TEXTS = ["Good morning.", "Status tables should add up. This request has two sentences."]
BAD_VOICE_TEXT = "Nobody speaks this."
LONG_TEXT = "Far too long for the daemon's limit. " * 1000  # 37,000 characters; the limit here is 20,000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("status"), workers=1, limits={"max_text_chars": 20_000})
    d.start()
    try:
        with d.client() as client:
            d.results = [client.synthesize(text, "joe", request_id=f"status-{i}") for i, text in enumerate(TEXTS)]
            with pytest.raises(VoxpipeError):
                client.synthesize(BAD_VOICE_TEXT, "no-such-voice", request_id="status-bad")
            with pytest.raises(VoxpipeError, match="too_long|characters"):
                client.synthesize(LONG_TEXT, "joe", request_id="status-long")
        # Worker counters reach the status by heartbeat: wait until they count every
        # request, so every test compares settled figures.
        settled_status(d)
        yield d
    finally:
        d.stop()


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "status", "--endpoint", daemon.endpoint, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
@pytest.mark.slow
def test_json_parses_and_matches_the_status_query(daemon):
    result = cli(daemon, "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    with daemon.client() as client:
        queried = client.status()
    assert set(printed) == set(queried)
    for key in ("ready", "run_id", "version", "endpoint", "voices", "counts", "active_requests", "voice_cache"):
        assert printed[key] == queried[key], (key, printed[key], queried[key])
    assert printed["last_minute"]["completed"] == queried["last_minute"]["completed"]
    assert [(p["role"], p["name"], p["pid"]) for p in printed["processes"]] == \
           [(p["role"], p["name"], p["pid"]) for p in queried["processes"]]
    assert [d["kind"] for d in printed["devices"]] == [d["kind"] for d in queried["devices"]]


@pytest.mark.e2e
@pytest.mark.slow
def test_content(daemon):
    status = json.loads(cli(daemon, "--json").stdout)
    assert status["ready"] is True and "joe" in status["voices"]
    roles = {p["name"]: p for p in status["processes"]}
    assert set(roles) == {"supervisor", "frontend", "merger", "w0"}
    for proc in roles.values():
        assert proc["pid"] > 0 and proc["rss"] > 1e6
    assert status["devices"] and all(d["kind"] in ("cpu", "gpu") for d in status["devices"])
    assert status["queues"]["queued"] == 0
    assert "metrics" not in status  # off unless asked for

    recent = status["last_minute"]
    assert (recent["completed"], recent["failed"]) == (len(TEXTS), 0)  # a rejection is not an accepted request
    assert recent["requests_per_s"] == pytest.approx(recent["completed"] / recent["window_s"], rel=0.02)
    mean_total = statistics.mean(r.timings["total_s"] for r in daemon.results)
    assert recent["avg_latency_s"] == pytest.approx(mean_total, abs=0.05)
    assert 0 < recent["avg_first_audio_s"] <= recent["avg_latency_s"] + 1e-6
    audio = sum(r.duration for r in daemon.results)
    assert recent["audio_s_per_s"] * recent["window_s"] == pytest.approx(audio, rel=0.02)

    cache = status["voice_cache"]
    worker_cache = roles["w0"]["stats"]["cache"]
    assert (cache["hits"], cache["misses"]) == (worker_cache["hits"], worker_cache["misses"])
    assert cache["misses"] >= 1 and cache["hits"] >= 1  # the preload, then the requests
    assert cache["hit_rate"] == pytest.approx(cache["hits"] / (cache["hits"] + cache["misses"]))


@pytest.mark.e2e
@pytest.mark.slow
def test_table_shows_the_same(daemon):
    result = cli(daemon)
    assert result.returncode == 0, result.stderr
    status = json.loads(cli(daemon, "--json").stdout)
    table = result.stdout
    for proc in status["processes"]:
        assert re.search(rf"^{proc['role']}\s+{proc['name']}\s+{proc['pid']}\s+ready", table, re.M), proc["name"]
    recent = status["last_minute"]
    assert f"{recent['completed']} completed, {recent['failed']} failed" in table
    rate = status["voice_cache"]["hit_rate"]
    assert f"voice cache hit rate {rate:.1%}" in table
    assert re.search(r"^device (cpu|gpu\d+):", table, re.M)


@pytest.mark.e2e
@pytest.mark.slow
def test_one_log_line_per_request(daemon):
    lines = [line for line in daemon.log().splitlines() if line.startswith("voxpipe: request ")]
    fields = [dict(part.split("=", 1) for part in line[len("voxpipe: request "):].split()) for line in lines]
    by_id = {f["id"]: f for f in fields}
    assert len(by_id) == len(fields), "a request was logged twice"
    for i, result in enumerate(daemon.results):
        entry = by_id[f"status-{i}"]
        assert entry["outcome"] == "ok" and entry["voice"] == "joe"
        assert int(entry["chars"]) > 0 and int(entry["chunks"]) == result.chunks
        assert 0 < float(entry["first_audio_s"]) <= float(entry["total_s"])
    # refused requests name what they asked for, as accepted ones do
    bad, long = by_id["status-bad"], by_id["status-long"]
    assert (bad["outcome"], bad["voice"], int(bad["chars"])) == ("unknown_voice", "no-such-voice", len(BAD_VOICE_TEXT))
    assert (long["outcome"], long["voice"], int(long["chars"])) == ("too_long", "joe", len(LONG_TEXT))


@pytest.mark.e2e
@pytest.mark.slow
def test_top_line_and_frontend_row_agree_right_after_a_request(daemon):
    """The frontend's row is made with the status, not a heartbeat earlier."""
    with daemon.client() as client:
        for i in range(3):
            client.synthesize("Quick check.", "joe", request_id=f"agree-{i}")
            status = client.status()  # at once: no heartbeat in between
            row = next(p["stats"] for p in status["processes"] if p["role"] == "frontend")
            assert status["active_requests"] == row["active"] == 0
            assert row["completed"] == status["counts"]["completed"] and row["accepted"] == status["counts"]["accepted"]
    table = cli(daemon).stdout
    assert "active requests 0" in table and re.search(r"^frontend .* active 0 ", table, re.M), table


def test_no_daemon_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "status", "--json", "--endpoint",
                             f"ipc://{tmp_path}/nothing.sock"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "voxpipe status:" in result.stderr and not result.stdout
