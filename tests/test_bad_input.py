"""Every bad input gets its typed error, and the daemon serves the next request."""
from __future__ import annotations

import msgpack
import pytest
import zmq

from voxpipe.config import LimitsConfig
from voxpipe.ipc import codec
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.messages import Error, Hello, Pong, SynthesisOptions, SynthesisRequest, Welcome
from tests.daemon_proc import Daemon

pytestmark = pytest.mark.e2e

MAX_TEXT_CHARS = LimitsConfig().max_text_chars  # the shared daemon runs the default limits


@pytest.fixture(scope="module")
def daemon(shared_daemon):
    return shared_daemon


def still_serves(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.synthesize("Still here.", "joe").duration > 0.3


@pytest.mark.parametrize("voice, code", [
    ("nobody", "unknown_voice"),
    ("../../etc/passwd", "bad_voice"),
    ("/tmp/joe", "bad_voice"),
    ("joe/../joe", "bad_voice"),
    ("", "bad_voice"),
])
def test_bad_voices(daemon, voice, code):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("Hello.", voice)
    assert err.value.code == code
    still_serves(daemon)


@pytest.mark.parametrize("text, code", [
    ("", "empty_text"),
    ("   \n\t ", "empty_text"),
    ("x" * (MAX_TEXT_CHARS + 1), "too_long"),
    ("... !!! ???", "unspeakable"),
], ids=["empty", "whitespace", "over-the-limit", "punctuation"])
def test_bad_texts(daemon, text, code):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize(text, "joe")
    assert err.value.code == code
    still_serves(daemon)


@pytest.mark.parametrize("options", [{"noise_scale": -1.0}, {"length_scale": 100.0}, {"speaker_id": 5},
                                     {"policy": "cut99"}, {"engine": "nonesuch"}])
def test_bad_options(daemon, options):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("Hello.", "joe", **options)
    assert err.value.code == "bad_option"


def next_reply(sock: zmq.Socket):
    """The next answer, past unsolicited probes (Pong with nonce 0)."""
    while True:
        message = codec.decode(sock.recv_multipart()[0])
        if not (isinstance(message, Pong) and message.nonce == 0):
            return message


def raw_socket(daemon: Daemon) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 60_000)
    sock.connect(daemon.endpoint)
    return sock


@pytest.mark.parametrize("frames", [
    [b"\xc1\xc1\xc1"],
    [b"plain text"],
    [msgpack.packb({"text": "hi"})],
    [msgpack.packb([12, "r", "hi", "joe", "yes", [2]])],
    [codec.encode(Hello(1, "x")), b"an extra frame"],
    [msgpack.packb([12, "r", "hi", "joe", False, [2, 0.5] + [None] * 20])],
])
def test_malformed_frames_get_bad_request(daemon, frames):
    sock = raw_socket(daemon)
    try:
        sock.send_multipart(frames)
        reply = next_reply(sock)
    finally:
        sock.close()
    assert isinstance(reply, Error) and reply.code == "bad_request"
    still_serves(daemon)


def test_oversized_frame_is_dropped_and_daemon_serves(daemon):
    sock = raw_socket(daemon)
    try:
        sock.send(b"\x00" * (8 * 1024 * 1024))  # over MAXMSGSIZE: libzmq drops the peer
    finally:
        sock.close()
    still_serves(daemon)


def test_protocol_mismatch_is_refused(daemon):
    sock = raw_socket(daemon)
    try:
        sock.send(codec.encode(Hello(999, "future client")))
        reply = next_reply(sock)
        sock.send(codec.encode(Hello(1, "today's client")))
        welcome = next_reply(sock)
    finally:
        sock.close()
    assert isinstance(reply, Error) and reply.code == "protocol_mismatch"
    assert isinstance(welcome, Welcome)


def test_duplicate_request_id_is_refused(daemon):
    sock = raw_socket(daemon)
    request = SynthesisRequest("dup-1", "This sentence keeps the first request busy for a little while.",
                               "joe", False, SynthesisOptions())
    try:
        sock.send(codec.encode(request))
        sock.send(codec.encode(request))
        replies = [next_reply(sock) for _ in range(2)]
    finally:
        sock.close()
    assert any(isinstance(r, Error) and r.code == "duplicate" for r in replies)
