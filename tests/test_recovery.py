"""Crash recovery, liveness and admission control, with real processes and real kills."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import numpy as np
import pytest

from voxpipe.ipc.client import AsyncClient, AudioFragment
from voxpipe.ipc.errors import VoxpipeError
from tests.daemon_proc import Daemon, longform, our_segments, restored, same_audio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}
TEXTS = ["Hello there.", "Good morning to you.", "The quick brown fox jumps over the lazy dog.",
         "Please remember to water the plants.", "Our train leaves at half past seven."]


def worker_pids(daemon: Daemon) -> dict[str, int]:
    with daemon.client() as client:
        return {p["name"]: p["pid"] for p in client.status()["processes"] if p["role"] == "worker"}


def pid_of(daemon: Daemon, name: str) -> int:
    with daemon.client() as client:
        return next(p["pid"] for p in client.status()["processes"] if p["name"] == name)


async def burst(endpoint: str, texts: list[str], **options) -> list[object]:
    async with AsyncClient(endpoint, timeout=120) as client:
        return await asyncio.gather(*(client.synthesize(t, "joe", **options) for t in texts), return_exceptions=True)


async def holding_chunks(daemon: Daemon, worker: str, active: int, timeout: float = 30.0) -> None:
    """Wait until `worker` holds chunks and at least `active` requests are accepted and
    unfinished: the frontend's own figures, made when the status is asked for."""
    def now_holding() -> bool:
        with daemon.client() as client:
            status = client.status()
        held = status["queues"]["workers"].get(worker, {}).get("in_flight", 0)
        return held > 0 and status["active_requests"] >= active

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(now_holding):
        assert time.monotonic() < deadline, f"{worker} never held chunks of {active} requests in flight"
        await asyncio.sleep(0.01)


def wait_for(predicate, timeout: float, step: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory):
    # Most tests here kill or stop a stage: a roomy restart budget, so that the module's
    # kills (more than the default 5 a minute) do not stop the daemon part-way through.
    # The budget itself is tested with a daemon of its own (the last test).
    with Daemon(tmp_path_factory.mktemp("recovery"), workers=2, supervisor={"restart_budget": 100}) as d:
        yield d


@pytest.fixture
def daemon(module_daemon):
    """The module's daemon, whole: before each test and after it, wait until every stage
    a test killed or stopped has been replaced and is ready and beating, and no request
    is left over, so each test starts from a daemon as good as a fresh one."""
    restored(module_daemon)
    module_daemon.log_from = len(module_daemon.log())  # where this test's part of the log begins
    yield module_daemon
    restored(module_daemon)


def log_since_start(daemon: Daemon) -> str:
    return daemon.log()[daemon.log_from:]


def test_sigkill_worker_with_60_requests_in_flight(daemon):
    texts = [TEXTS[i % len(TEXTS)] for i in range(60)]
    victim = worker_pids(daemon)["w0"]

    async def scenario() -> list[object]:
        task = asyncio.create_task(burst(daemon.endpoint, texts, **NOISE_OFF))
        await holding_chunks(daemon, "w0", active=len(texts) // 2)  # requests accepted and in flight
        os.kill(victim, signal.SIGKILL)
        return await task

    results = asyncio.run(scenario())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert all(r.duration > 0.3 for r in results)
    wait_for(lambda: worker_pids(daemon).get("w0") not in (None, victim), 30)
    with daemon.client() as client:
        assert client.synthesize("Back to normal.", "joe").duration > 0.3
    log = log_since_start(daemon)
    assert f"worker w0 (pid {victim})" in log and "restarting" in log, log


def test_sigstop_worker_is_replaced_and_its_requests_finish(daemon):
    victim = worker_pids(daemon)["w1"]

    async def scenario() -> list[object]:
        task = asyncio.create_task(burst(daemon.endpoint, [TEXTS[i % 5] for i in range(20)], **NOISE_OFF))
        await holding_chunks(daemon, "w1", active=10)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        results = await task
        return [time.monotonic() - stopped, results]

    _, results = asyncio.run(scenario())
    assert not [r for r in results if isinstance(r, BaseException)]
    log = log_since_start(daemon)
    assert re.search(rf"worker w1 \(pid {victim}\) stopped sending heartbeats", log), log
    wait_for(lambda: worker_pids(daemon)["w1"] != victim, timeout=30)  # the new pid shows in its first heartbeat


def test_hang_is_detected_within_three_seconds(daemon):
    victim = worker_pids(daemon)["w0"]
    os.kill(victim, signal.SIGSTOP)
    detected = wait_for(lambda: f"(pid {victim}) stopped sending heartbeats" in log_since_start(daemon), 10)
    assert detected <= 3.0 + 0.5  # the log line is written right after detection; allow for polling


def several_chunks() -> str:
    """The long form's first paragraph: enough chunks to kill a stage in the middle."""
    return longform().split("\n\n")[0]


def test_merger_restart_loses_no_request_and_no_audio_repeats(daemon):
    # Noise on and no seed: the replayed chunks render with the seed the daemon drew.
    text = several_chunks()
    with daemon.client() as client:
        merger = pid_of(daemon, "merger")
        stream = client.stream(text, "joe")
        fragments = []
        for fragment in stream:
            fragments.append(fragment.samples)
            if len(fragments) == 1:
                os.kill(merger, signal.SIGKILL)
        assert stream.result is not None
        undisturbed = client.synthesize(text, "joe", seed=stream.result.seed).samples
    audio = np.concatenate(fragments)
    assert same_audio(audio, undisturbed)


def test_frontend_restart_clients_resend_and_get_each_sample_once(daemon):
    # Noise on and no seed: the resend carries the seed the first frontend drew.
    text = several_chunks()
    frontend = pid_of(daemon, "frontend")
    with daemon.client() as client:
        fragments = []
        stream = client.stream(text, "joe")
        for fragment in stream:
            fragments.append(fragment.samples)
            if len(fragments) == 1:
                os.kill(frontend, signal.SIGKILL)
        assert stream.result is not None
    restored(daemon)
    with daemon.client() as client:
        undisturbed = client.synthesize(text, "joe", seed=stream.result.seed).samples
    audio = np.concatenate(fragments)
    assert same_audio(audio, undisturbed)


def test_frontend_restart_async_client_resends_every_request_in_flight(daemon):
    # Two requests over one socket, one streamed and one whole: each is resent after the
    # restart and each ends with exactly the audio an undisturbed run gives.
    text = several_chunks()
    with daemon.client() as client:
        undisturbed = client.synthesize(text, "joe", **NOISE_OFF).samples
    frontend = pid_of(daemon, "frontend")

    async def both() -> tuple[np.ndarray, np.ndarray]:
        async with AsyncClient(daemon.endpoint, timeout=120) as client:
            whole = asyncio.create_task(client.synthesize(text, "joe", **NOISE_OFF))
            fragments = []
            async for item in client.stream(text, "joe", **NOISE_OFF):
                if isinstance(item, AudioFragment):
                    fragments.append(item.samples)
                    if len(fragments) == 1:
                        os.kill(frontend, signal.SIGKILL)
            return np.concatenate(fragments), (await whole).samples

    streamed, whole = asyncio.run(both())
    assert same_audio(streamed, undisturbed) and same_audio(whole, undisturbed)


def test_overload_gets_busy_promptly_and_accepted_requests_finish(tmp_path):
    # Queues hold 8 requests; a burst of 40 (5x) must get `busy` for the rest, at once.
    with Daemon(tmp_path, workers=1, limits={"max_active_requests": 8}) as daemon:
        results = asyncio.run(burst(daemon.endpoint, [TEXTS[i % 5] for i in range(40)]))
        busy = [r for r in results if isinstance(r, VoxpipeError) and r.code == "busy"]
        done = [r for r in results if not isinstance(r, BaseException)]
        assert len(busy) >= 40 - 8 - 8  # workers finishing during the burst free some places
        assert len(done) + len(busy) == 40
        assert all(r.duration > 0.3 for r in done)
        with daemon.client() as client:
            assert client.status()["active_requests"] == 0


def test_expired_request_is_answered_timeout(daemon):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize(longform(), "joe", timeout=0.2)
        assert err.value.code == "timeout"
        wait_for(lambda: client.status()["active_requests"] == 0, 5)
        assert client.synthesize("Still serving.", "joe").duration > 0.3


def test_cancel_frees_queued_and_in_flight_chunks_quickly(daemon):
    with daemon.client() as client:
        stream = client.stream(longform() * 2, "joe")
        next(iter(stream))
        stream.close()  # cancels
        freed = wait_for(lambda: client.status()["active_requests"] == 0
                         and client.status()["queues"]["queued"] == 0, 5, step=0.02)
    assert freed <= 0.5


def test_restart_budget_exhausted_exits_nonzero_naming_the_worker(tmp_path):
    # A worker that dies at every start: an engine that is not installed here.
    daemon = Daemon(tmp_path, workers=1, worker={"engine": "tensorrt"},
                    supervisor={"restart_budget": 1, "restart_window_s": 60.0})
    with pytest.raises(RuntimeError, match="worker w0"):
        daemon.start(wait=60)
    assert daemon.proc.wait(30) != 0
    run_id = re.search(r"starting run (\w+)", daemon.log()).group(1)
    assert "restart budget" in daemon.log()
    assert not any(run_id in name for name in our_segments())
    # No process of the daemon's session outlives it (multiprocessing's helper process
    # exits on its own once the supervisor's end of its pipe is closed).
    wait_for(lambda: os.popen(f"ps -o pid= -s {daemon.proc.pid}").read().split() == [], 10)
