"""A daemon that stops tells its clients: requests in flight get the retriable
`shutting_down` before the sockets close (restart budget spent, drain timed out), and a
client whose daemon vanished without a word fails `unavailable` after a few silent
seconds instead of waiting out its timeout. Each test waits on states, never a clock."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import pytest

from tests.daemon_proc import Daemon, free_port, longform
from voxpipe.ipc.client import AsyncClient, Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.shm import remove_stale_pools

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = 300.0  # what the clients would wait without being told
TEXT = longform().split("\n\n")[0]


def worker_pid(daemon: Daemon) -> int:
    with daemon.client() as client:
        return next(p["pid"] for p in client.status()["processes"] if p["role"] == "worker")


def budget_of_nothing(tmp_path) -> Daemon:
    """A daemon with one worker whose first death spends its restart budget."""
    return Daemon(tmp_path, workers=1, supervisor={"restart_budget": 0, "restart_window_s": 60.0}).start()


def test_sync_client_is_told_when_the_restart_budget_is_spent(tmp_path):
    daemon = budget_of_nothing(tmp_path)
    try:
        victim = worker_pid(daemon)
        with Client(daemon.endpoint, timeout=TIMEOUT) as client:
            with pytest.raises(VoxpipeError) as err:
                for _ in client.stream(TEXT, "joe"):
                    os.kill(victim, signal.SIGKILL)  # the first audio is out: the request is in flight
        assert err.value.code == "shutting_down" and err.value.retriable, err.value
        assert daemon.proc.wait(30) != 0
        assert "restart budget" in daemon.log()
    finally:
        daemon.stop()


def test_async_client_is_told_when_the_restart_budget_is_spent(tmp_path):
    daemon = budget_of_nothing(tmp_path)

    async def scenario() -> list[object]:
        async with AsyncClient(daemon.endpoint, timeout=TIMEOUT) as client:
            async def streamed() -> None:
                async for _ in client.stream(TEXT, "joe"):
                    pass

            first_audio = asyncio.Event()

            async def killing() -> None:
                async for _ in client.stream(TEXT, "joe"):
                    if not first_audio.is_set():
                        first_audio.set()
                        os.kill(worker_pid(daemon), signal.SIGKILL)

            return await asyncio.gather(killing(), streamed(), client.synthesize(TEXT, "joe"),
                                        return_exceptions=True)

    try:
        results = asyncio.run(scenario())
        assert all(isinstance(r, VoxpipeError) and r.code == "shutting_down" and r.retriable for r in results), results
        assert daemon.proc.wait(30) != 0
    finally:
        daemon.stop()


def test_http_request_is_answered_shutting_down_when_the_drain_times_out(tmp_path):
    httpx = pytest.importorskip("httpx")
    port = free_port()
    daemon = Daemon(tmp_path, workers=1, http={"bind": f"127.0.0.1:{port}"},
                    limits={"drain_timeout_s": 0.5}).start()
    answer: dict = {}

    def post() -> None:
        reply = httpx.get(f"http://127.0.0.1:{port}/tts", params={"text": TEXT, "text_lang": "en",
                          "ref_audio_path": "joe", "streaming_mode": 0}, timeout=TIMEOUT)
        answer.update(status=reply.status_code, body=reply.text)

    try:
        sender = threading.Thread(target=post)
        sender.start()
        with daemon.client() as client:
            while client.status()["active_requests"] == 0:
                assert sender.is_alive(), answer
        daemon.proc.send_signal(signal.SIGTERM)  # drain, which times out with the request unfinished
        sender.join(TIMEOUT)
        # GPT-SoVITS's api_v2 answers every failure 400; the body names the typed code.
        assert answer.get("status") == 400, answer
        body = json.loads(answer["body"])
        assert body["code"] == "shutting_down" and body["retriable"] is True, body
    finally:
        daemon.stop()


def test_clients_notice_a_daemon_that_went_silent_without_a_word(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()
    try:
        with Client(daemon.endpoint, timeout=TIMEOUT, gone_after=3.0) as client:
            with pytest.raises(VoxpipeError) as err:
                for _ in client.stream(TEXT, "joe"):
                    os.killpg(daemon.proc.pid, signal.SIGSTOP)  # every process of the daemon, at once
        assert err.value.code == "unavailable" and err.value.retriable, err.value
    finally:
        os.killpg(daemon.proc.pid, signal.SIGCONT)
        daemon.stop()


# Clients below wait up to TIMEOUT for a silent daemon (gone_after): only the endpoint
# lock can tell them it is gone, well before the old 10 s silence would have.


def test_sync_client_is_told_at_once_when_the_whole_daemon_is_killed(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()
    try:
        with Client(daemon.endpoint, timeout=TIMEOUT, gone_after=TIMEOUT) as client:
            with pytest.raises(VoxpipeError) as err:
                for _ in client.stream(TEXT, "joe"):
                    daemon.kill()  # SIGKILL to every process of the daemon at once
        assert err.value.code == "unavailable" and err.value.retriable, err.value
        assert "gone" in err.value.message and "killed" in err.value.message, err.value
    finally:
        daemon.stop()
        remove_stale_pools()  # the killed daemon's shared memory


def test_async_clients_are_told_at_once_when_the_whole_daemon_is_killed(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()

    async def scenario() -> list[object]:
        async with AsyncClient(daemon.endpoint, timeout=TIMEOUT, gone_after=TIMEOUT) as client:
            first_audio = asyncio.Event()

            async def killing() -> None:
                async for _ in client.stream(TEXT, "joe"):
                    if not first_audio.is_set():
                        first_audio.set()
                        daemon.kill()

            async def streamed() -> None:
                async for _ in client.stream(TEXT, "joe"):
                    pass

            return await asyncio.gather(killing(), streamed(), client.synthesize(TEXT, "joe"),
                                        return_exceptions=True)

    try:
        results = asyncio.run(scenario())
        assert all(isinstance(r, VoxpipeError) and r.code == "unavailable" and r.retriable
                   and "killed" in r.message for r in results), results
    finally:
        daemon.stop()
        remove_stale_pools()


def test_sync_client_is_told_when_the_whole_daemon_hangs(tmp_path):
    daemon = Daemon(tmp_path, workers=1).start()
    try:
        with Client(daemon.endpoint, timeout=TIMEOUT, gone_after=TIMEOUT) as client:
            with pytest.raises(VoxpipeError) as err:
                for _ in client.stream(TEXT, "joe"):
                    os.killpg(daemon.proc.pid, signal.SIGSTOP)  # its supervisor stops touching the lock
        assert err.value.code == "unavailable" and err.value.retriable, err.value
        assert "has not run" in err.value.message, err.value
    finally:
        os.killpg(daemon.proc.pid, signal.SIGCONT)
        daemon.stop()
