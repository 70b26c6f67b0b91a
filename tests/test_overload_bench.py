"""The overload benchmark's own logic on a tiny run: every request is answered, busy
answers are counted and timed. (No speed is asserted.)"""
from __future__ import annotations

import pytest

from tests.daemon_proc import Daemon
from voxpipe.bench.overload import overload
from voxpipe.ipc.client import run_async
from voxpipe.stages.families.piper.engines.null_engine import EMULATED_GPU_ENV


@pytest.mark.slow
@pytest.mark.e2e
def test_tiny_overload_run_accounts_for_every_request(tmp_path, monkeypatch):
    # Each chunk holds its slot for half a second (sleeping, no core): the accepted four are
    # still running while the rest of the burst lands, however slowly a busy machine sends
    # it. With the null engine's instant chunks a slot could free up mid-burst.
    monkeypatch.setenv(EMULATED_GPU_ENV, "500")
    with Daemon(tmp_path, workers=1, extra_args=["--engine", "null"], limits={"max_active_requests": 4}) as daemon:
        result = run_async(overload(daemon.endpoint, capacity=4, factor=3))
    assert result.sent == 12
    assert len(result.busy_s) + len(result.finished_s) == 12 and not result.other_errors
    assert len(result.busy_s) >= 4 and len(result.finished_s) >= 4
    assert "| 4 | 12 |" in result.table()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_full_daemon_refuses_quickly_but_keeps_the_other_answers(tmp_path):
    """While full, a request is refused `busy` from its id alone (before the full decode);
    a duplicate id and a bad id still get their own answers, and the log line of each
    refusal names the voice and the length of the text."""
    import msgpack
    import zmq

    from voxpipe.ipc import codec
    from voxpipe.ipc.messages import Error, SynthesisOptions, SynthesisRequest
    from tests.daemon_proc import longform

    def request(rid: str, text: str = "Hello there.") -> bytes:
        return codec.encode(SynthesisRequest(rid, text, "joe", False, SynthesisOptions()))

    with Daemon(tmp_path, workers=1, limits={"max_active_requests": 2}) as daemon:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 60_000)
        sock.connect(daemon.endpoint)
        try:
            for rid in ("long-1", "long-2"):  # fill the daemon for a while
                sock.send(request(rid, longform()))
            malformed = msgpack.packb([SynthesisRequest.TAG, "odd-1", "Hi.", "joe", "not a bool", ["nor options"]])
            for frame in (request("quick-1", "Refused at once."), request("long-1"), request(""), malformed):
                sock.send(frame)
            answers = {}
            while len(answers) < 4:
                message = codec.decode(sock.recv_multipart()[0])
                if isinstance(message, Error):
                    answers.setdefault(message.request_id, message.code)
        finally:
            sock.close()  # the daemon cancels the long requests
    assert answers == {"quick-1": "busy", "long-1": "duplicate", "": "bad_request", "odd-1": "busy"}
    logged = [line for line in daemon.log().splitlines() if "id=quick-1 " in line]
    assert len(logged) == 1 and "voice=joe" in logged[0] and f"chars={len('Refused at once.')}" in logged[0]
