"""Prometheus metrics: after real requests through a real daemon the endpoint shows them
in the histograms and counters; totals survive a worker restart; the per-run sample
directory is gone after the daemon stops. Plus the pieces alone and the config keys."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from voxpipe.config import ConfigError, load_config
from voxpipe.metrics import MULTIPROC_ENV, RecentWindow, recorder, request_log_line, voice_cache_summary
from voxpipe.ipc.errors import VoxpipeError
from tests.daemon_proc import ROOT, Daemon, free_port

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TEXTS = ["Hello there.", "The first sentence is short. The second one is a little longer, with a clause."]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    port = free_port()
    d = Daemon(tmp_path_factory.mktemp("metrics"), workers=1, metrics_port=port)
    d.url = f"http://127.0.0.1:{port}/metrics"
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_requests_show_in_histograms_and_counters(daemon):
    before = scrape(daemon.url)
    with daemon.client() as client:
        results = [client.synthesize(text, "joe") for text in TEXTS]
        streamed = list(client.stream(TEXTS[1], "joe"))
        with pytest.raises(VoxpipeError):
            client.synthesize("Nobody speaks this.", "no-such-voice")
    ok = len(TEXTS) + 1
    chunks = sum(r.chunks for r in results) + results[1].chunks
    audio_s = sum(r.duration for r in results) + sum(len(f.samples) for f in streamed) / results[1].sample_rate

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The worker folds its cache counters in once per loop turn: wait for them.
    after = wait_for(lambda: (s := scrape(daemon.url)) and
                     value(s, "voxpipe_voice_cache_hits_total", worker="w0") > value(before, "voxpipe_voice_cache_hits_total", worker="w0") and s,
                     what="voice cache hits")
    assert delta("voxpipe_requests_total", outcome="ok") == ok
    assert delta("voxpipe_requests_total", outcome="unknown_voice") == 1
    for histogram in ("voxpipe_request_duration_seconds", "voxpipe_first_audio_seconds"):
        assert delta(f"{histogram}_count") == ok
        assert delta(f"{histogram}_bucket", le="+Inf") == ok
        assert delta(f"{histogram}_sum") > 0
    # First audio never comes after the whole answer.
    assert delta("voxpipe_first_audio_seconds_sum") <= delta("voxpipe_request_duration_seconds_sum") + 1e-6
    assert delta("voxpipe_audio_seconds_total") == pytest.approx(audio_s, rel=1e-6)
    assert delta("voxpipe_text_chars_total") > 0
    assert delta("voxpipe_stage_seconds_count", stage="plan") == ok  # the unknown voice failed in planning
    assert delta("voxpipe_stage_seconds_count", stage="queue") == chunks
    assert delta("voxpipe_stage_seconds_count", stage="synth") >= chunks
    assert delta("voxpipe_stage_seconds_count", stage="merge") == ok
    assert delta("voxpipe_batch_size_sum") == chunks  # every chunk in exactly one engine call
    assert 1 <= delta("voxpipe_batch_size_count") <= chunks
    assert value(after, "voxpipe_voice_cache_misses_total", worker="w0") >= 1  # the preload


@pytest.mark.e2e
@pytest.mark.slow
def test_supervisor_gauges(daemon):
    samples = scrape(daemon.url)
    assert value(samples, "voxpipe_ready") == 1
    stages = [("supervisor", "supervisor"), ("frontend", "frontend"), ("merger", "merger"), ("worker", "w0")]
    for role, name in stages:
        assert value(samples, "voxpipe_process_resident_memory_bytes", role=role, name=name) > 1e6
        if role != "supervisor":
            assert value(samples, "voxpipe_stage_up", role=role, name=name) == 1
            assert ("voxpipe_queue_depth", (("name", name), ("role", role))) in samples
    assert ("voxpipe_active_requests", ()) in samples
    for role in ("frontend", "merger", "worker"):
        assert ("voxpipe_restarts_total", (("role", role),)) in samples


@pytest.mark.e2e
@pytest.mark.slow
def test_totals_survive_a_worker_restart(daemon):
    # Counters of its own to carry over: under xdist this test may be the module's first.
    with daemon.client() as client:
        client.synthesize("Counted before the restart.", "joe")
    before = wait_for(lambda: (s := scrape(daemon.url)) and value(s, "voxpipe_requests_total", outcome="ok") > 0
                      and value(s, "voxpipe_voice_cache_hits_total", worker="w0") > 0 and s,
                      what="the request in the metrics")
    with daemon.client() as client:
        worker = next(p for p in client.status()["processes"] if p["name"] == "w0")
    os.kill(worker["pid"], signal.SIGKILL)
    after = wait_for(lambda: (s := scrape(daemon.url)) and value(s, "voxpipe_restarts_total", role="worker") ==
                     value(before, "voxpipe_restarts_total", role="worker") + 1 and value(s, "voxpipe_ready") == 1 and s,
                     timeout=60, what="the worker to be restarted and ready")
    # The dead worker's counters stay in the sums; the new one's preload adds a miss.
    for name, labels in [("voxpipe_requests_total", {"outcome": "ok"}), ("voxpipe_batch_size_count", {}),
                         ("voxpipe_voice_cache_hits_total", {"worker": "w0"})]:
        assert value(after, name, **labels) >= value(before, name, **labels) > 0
    wait_for(lambda: value(scrape(daemon.url), "voxpipe_voice_cache_misses_total", worker="w0") >
             value(before, "voxpipe_voice_cache_misses_total", worker="w0"), what="the new worker's preload miss")
    with daemon.client() as client:
        client.synthesize("Still counting.", "joe")
    assert value(scrape(daemon.url), "voxpipe_requests_total", outcome="ok") == value(before, "voxpipe_requests_total", outcome="ok") + 1


@pytest.mark.e2e
@pytest.mark.slow
def test_status_names_the_endpoint_and_stop_removes_everything(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, workers=1, metrics_port=port).start()
    try:
        with d.client() as client:
            status = client.status()
        assert status["metrics"] == f"http://127.0.0.1:{port}/metrics"
        run_dir = tmp_path / f"run-{status['run_id']}"
        assert any((run_dir / "metrics").glob("*.db"))
    finally:
        assert d.stop() == 0
    assert not run_dir.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_busy_port_is_a_clear_startup_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        d = Daemon(tmp_path, workers=1, metrics_port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="cannot serve metrics on 127.0.0.1"):
            d.start(wait=60)
        d.stop()


# ---- the pieces alone -----------------------------------------------------------------------

def test_recorder_is_a_no_op_without_the_directory():
    assert MULTIPROC_ENV not in os.environ
    rec = recorder()
    assert not rec.enabled
    rec.request_ended("ok", 1.0, 0.5, 2.0, 10)  # nothing to check but that it does nothing
    rec.voice_cache("w0", 3, 1)


def test_recorder_counts_cache_differences_in_a_fresh_process(tmp_path):
    code = """
import os, sys
from voxpipe.metrics import recorder
rec = recorder()
assert rec.enabled
rec.voice_cache("w0", 1, 1); rec.voice_cache("w0", 5, 1); rec.voice_cache("w0", 5, 2)
rec.conditioning_cache("w0", 0, 1); rec.conditioning_cache("w0", 3, 1)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
registry = CollectorRegistry(); MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=dict(os.environ, **{MULTIPROC_ENV: str(tmp_path)})).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(out) for s in f.samples}
    assert value(samples, "voxpipe_voice_cache_hits_total", worker="w0") == 5
    assert value(samples, "voxpipe_voice_cache_misses_total", worker="w0") == 2
    assert value(samples, "voxpipe_conditioning_cache_hits_total", worker="w0") == 3
    assert value(samples, "voxpipe_conditioning_cache_misses_total", worker="w0") == 1


def test_recent_window_throughput_and_latency():
    now = [1000.0]
    window = RecentWindow(60.0, clock=lambda: now[0])
    now[0] += 30.0
    window.add(True, 2.0, 0.5, audio_s=4.0)
    window.add(True, 4.0, 1.5, audio_s=8.0)
    window.add(False, 1.0, None)
    summary = window.summary()
    assert summary["window_s"] == 30.0  # up for half a minute: rates over that
    assert (summary["completed"], summary["failed"]) == (2, 1)
    assert summary["requests_per_s"] == pytest.approx(2 / 30.0)
    assert summary["audio_s_per_s"] == pytest.approx(12.0 / 30.0)
    assert summary["avg_latency_s"] == pytest.approx(3.0)
    assert summary["avg_first_audio_s"] == pytest.approx(1.0)
    now[0] += 65.0  # the first three are now over a minute old
    window.add(True, 1.0, 0.25, audio_s=1.0)
    summary = window.summary()
    assert summary["window_s"] == 60.0 and summary["completed"] == 1 and summary["failed"] == 0
    assert summary["avg_latency_s"] == pytest.approx(1.0)
    now[0] += 61.0
    assert window.summary()["completed"] == 0 and window.summary()["avg_latency_s"] is None


def test_voice_cache_summary():
    processes = [{"role": "worker", "stats": {"cache": {"hits": 3, "misses": 1}}},
                 {"role": "worker", "stats": {"cache": {"hits": 5, "misses": 1}}},
                 {"role": "frontend", "stats": {"cache": {"hits": 100}}}]
    assert voice_cache_summary(processes) == {"hits": 8, "misses": 2, "hit_rate": 0.8}
    assert voice_cache_summary([])["hit_rate"] is None


def test_request_log_line_quotes_client_strings():
    line = request_log_line("r1", "joe", 12, 2, 0.1234, 0.5, "ok")
    assert line == "voxpipe: request id=r1 voice=joe chars=12 chunks=2 first_audio_s=0.123 total_s=0.500 outcome=ok"
    forged = request_log_line('x outcome=ok\nvoxpipe: request id=y', "-", 0, 0, None, None, "busy")
    assert "\n" not in forged and forged.endswith(" outcome=busy") and "first_audio_s=-" in forged
    # The forged fields stay inside one quoted value.
    assert forged.startswith('voxpipe: request id="x outcome=ok\\nvoxpipe: request id=y" voice=- ')


# ---- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ("metrics_port = 70000\n", "metrics_port"),
    ("metrics_port = -1\n", "metrics_port"),
    ("metrics_port = '9100'\n", "metrics_port"),
    ('metrics_address = "localhost:9100"\n', "metrics_address"),
    ('socket_group = "no-such-group-voxpipe"\n', "socket_group"),
])
def test_bad_metrics_and_socket_keys_are_rejected_by_name(tmp_path, text, key):
    path = tmp_path / "voxpipe.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(path)
    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "config", "check", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and key in result.stderr


def test_good_metrics_keys_load(tmp_path):
    path = tmp_path / "voxpipe.toml"
    path.write_text('metrics_port = 9100\nmetrics_address = "::1"\n')
    config = load_config(path)
    assert (config.metrics_port, config.metrics_address) == (9100, "::1")
    assert load_config(None).metrics_port == 0  # off unless asked for


def test_serve_flag_is_validated(tmp_path):
    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--metrics-port", "99999",
                             "--endpoint", f"ipc://{tmp_path}/vp.sock"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "metrics_port" in result.stderr
