"""Hardening: malformed traffic, bad voices, vanished clients, exhausted memory, local
security and a short soak, each with a real daemon."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxpipe.ipc import codec
from voxpipe.ipc.client import Client, run_async
from voxpipe.ipc.errors import ProtocolError, VoxpipeError
from voxpipe.ipc.messages import Ping, Pong, SynthesisOptions, SynthesisRequest
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice
from tests.daemon_proc import ROOT, Daemon, longform, rescan_voices, settled_status
from voxpipe.bench.soak import soak


def rss(pid: int) -> int:
    """Private resident memory; pool pages the process maps are shared, not its own."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))


def process(daemon: Daemon, name: str) -> dict:
    with daemon.client() as client:
        return next(p for p in client.status()["processes"] if p["name"] == name)


# ---- malformed traffic -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(shared_daemon):
    return shared_daemon


def valid_wire() -> st.SearchStrategy:
    request = codec._to_wire(SynthesisRequest("r", "Hi.", "joe", False, SynthesisOptions()))
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True, allow_subnormal=False), st.text(max_size=20),
                     st.binary(max_size=20))
    tree = st.recursive(leaf, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                        max_leaves=20)
    mutated = st.lists(tree, min_size=0, max_size=10).map(lambda tail: [12, *tail])
    return st.one_of(tree, mutated, st.just(request).map(lambda r: r[:-1]))


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(st.one_of(st.binary(max_size=64), valid_wire().map(lambda w: msgpack.packb(w, use_bin_type=True))),
                       min_size=1, max_size=4))
def fuzz_once(sock: zmq.Socket, frames: list[bytes]) -> None:
    sock.send_multipart(frames)


def answered_after_the_fuzz(sock: zmq.Socket, nonce: int = 0xF0221) -> None:
    """Ping on the fuzzing socket and read until its Pong: the frontend reads one peer's
    frames in order, so by then it has handled every frame the fuzz sent."""
    sock.send(codec.encode(Ping(nonce)))
    sock.setsockopt(zmq.RCVTIMEO, 60_000)
    while True:
        frames = sock.recv_multipart()  # zmq.Again after a minute: the frontend stopped answering
        try:
            reply = codec.decode(frames[0])
        except ProtocolError:
            continue
        if isinstance(reply, Pong) and reply.nonce == nonce:
            return


@pytest.mark.e2e
@pytest.mark.slow
def test_fuzzed_frames_never_crash_and_memory_stays_bounded(daemon):
    frontend = process(daemon, "frontend")
    before = rss(frontend["pid"])
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(daemon.endpoint)
    try:
        fuzz_once(sock)
        answered_after_the_fuzz(sock)
    finally:
        sock.close()
    with daemon.client() as client:
        assert client.synthesize("Still serving after the fuzz.", "joe").duration > 0.5
    after = process(daemon, "frontend")
    assert after["pid"] == frontend["pid"]  # not restarted
    assert rss(frontend["pid"]) - before < 64 * 2**20


@pytest.mark.e2e
def test_megabytes_of_text_are_refused_and_serving_continues(daemon):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("word " * 300_000, "joe")  # 1.5 MB
        assert err.value.code == "too_long"
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    sock.send(b"x" * (16 * 2**20))  # beyond the socket's size limit: the peer is dropped
    sock.close()
    with daemon.client() as client:
        assert client.synthesize("Fine.", "joe").duration > 0.3


# ---- bad voices ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voices_daemon(tmp_path_factory):
    """One daemon for the bad-voice tests: each adds voices of its own names to the
    directory and leaves "good" and "joe" serving, as the next one expects."""
    root = tmp_path_factory.mktemp("voices-daemon")
    voices = root / "voices"
    write_random_piper_voice(voices, "good", seed=1)
    daemon = Daemon(root / "d", workers=1, voices_dir=str(voices), preload=["joe"]).start()
    yield daemon, voices
    daemon.stop()


def known(voice: str):
    return lambda status: voice in status["voices"]


def unavailable(voice: str):
    return lambda status: voice in status["unavailable_voices"] and voice not in status["voices"]


def gone(voice: str):
    return lambda status: voice not in status["voices"] and voice not in status["unavailable_voices"]


def expect_error(daemon: Daemon, voice: str, code: str, name_in_message: bool = True) -> None:
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("Hello there.", voice)
    assert err.value.code == code, err.value
    if name_in_message:
        assert voice in err.value.message


def still_serves(daemon: Daemon, *voices: str) -> None:
    with daemon.client() as client:
        for voice in voices:
            assert client.synthesize("Hello there.", voice).duration > 0.1


@pytest.mark.e2e
@pytest.mark.slow
def test_corrupt_model_is_unavailable_and_others_still_served(voices_daemon):
    daemon, voices = voices_daemon
    write_random_piper_voice(voices, "broken", seed=2)
    (voices / "broken" / "broken.onnx").write_bytes(os.urandom(4096))
    rescan_voices(daemon, known("broken"))  # its config is fine: listed, until a worker fails to load it
    expect_error(daemon, "broken", "voice_unavailable")
    expect_error(daemon, "broken", "voice_unavailable")  # marked: answered without a reload attempt
    still_serves(daemon, "good", "joe")
    assert "broken" in daemon.client().status()["unavailable_voices"]


@pytest.mark.e2e
@pytest.mark.slow
def test_config_that_does_not_match_its_model(voices_daemon):
    daemon, voices = voices_daemon
    write_random_piper_voice(voices, "mismatch", seed=3)
    config_path = voices / "mismatch" / "mismatch.onnx.json"
    config = json.loads(config_path.read_text())
    config["phoneme_id_map"]["a"] = [5000]  # an id the model's embedding does not have
    config_path.write_text(json.dumps(config))
    rescan_voices(daemon, known("mismatch"))
    expect_error(daemon, "mismatch", "voice_unavailable")
    still_serves(daemon, "good")


@pytest.mark.e2e
@pytest.mark.slow
def test_missing_files_and_a_directory_that_changes_while_running(voices_daemon):
    daemon, voices = voices_daemon
    expect_error(daemon, "later", "unknown_voice")
    write_random_piper_voice(voices, "later", seed=4)  # added while running: no restart needed
    rescan_voices(daemon, known("later"))
    still_serves(daemon, "later")
    (voices / "later" / "later.onnx.json").unlink()  # its config disappears
    rescan_voices(daemon, unavailable("later"))
    expect_error(daemon, "later", "voice_unavailable")
    shutil.rmtree(voices / "later")
    rescan_voices(daemon, gone("later"))
    expect_error(daemon, "later", "unknown_voice")
    still_serves(daemon, "good", "joe")


# ---- vanished clients, exhausted memory ----------------------------------------------------------

CLIENT_SCRIPT = """
import sys
from voxpipe.ipc.client import Client
with Client(sys.argv[1]) as client:
    for fragment in client.stream(sys.argv[2], "joe"):
        print("fragment", flush=True)
        sys.stdin.readline()  # blocks: the parent kills us here
"""


@pytest.mark.e2e
def test_client_that_vanishes_mid_stream_is_cancelled_and_freed(daemon):
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, daemon.endpoint, longform() * 2], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "fragment"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    with daemon.client() as client:
        while time.monotonic() < deadline:
            status = client.status()
            if status["active_requests"] == 0 and status["queues"]["queued"] == 0:
                break
            time.sleep(0.05)
        assert status["active_requests"] == 0 and status["queues"]["queued"] == 0
    deadline = time.monotonic() + 30
    while True:  # the merger frees the request's audio when its DropRequest arrives
        pool = next(p for p in settled_status(daemon)["processes"] if p["name"] == "merger")["stats"]["pool"]
        if pool["free"] == pool["slots"] or time.monotonic() > deadline:
            break
    assert pool["free"] == pool["slots"]


@pytest.mark.e2e
@pytest.mark.slow
def test_audio_larger_than_the_pool_gets_no_memory_and_serving_continues(tmp_path):
    config = {"shm": {"worker_pool_mib": 1, "slot_kib": 64}, "frontend": {"chunk_budget": 3000, "first_chunk": False}}
    sentence = ("The long sentence goes on and on, past one place and another, over hills and through "
                "valleys, never stopping for breath, because it wants to be longer than the pool. ") * 2
    with Daemon(tmp_path, workers=1, **config) as daemon, daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize(sentence.replace(". ", ", "), "joe")
        assert err.value.code in ("no_memory", "retries_exhausted")
        assert client.synthesize("Short is fine.", "joe").duration > 0.3


# ---- local security ---------------------------------------------------------------------------------

def test_tcp_endpoint_is_refused_without_curve_keys(tmp_path):
    result = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--endpoint", "tcp://127.0.0.1:47811"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CURVE" in result.stderr and "tcp://" in result.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_tcp_with_curve_keys_admits_only_known_clients(tmp_path):
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "keys", "generate", str(keys)], cwd=ROOT, check=True,
                   capture_output=True)
    stranger = tmp_path / "stranger"
    subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "keys", "generate", str(stranger)], cwd=ROOT, check=True,
                   capture_output=True)
    shutil.copy(keys / "server.key", stranger / "server.key")  # knows the server, but is not authorized
    daemon = Daemon(tmp_path / "d", workers=1, curve_keys_dir=str(keys))
    daemon.endpoint = "tcp://127.0.0.1:47812"
    daemon.args += ["--endpoint", daemon.endpoint]
    os.environ["VOXPIPE_CURVE_DIR"] = str(keys)
    try:
        daemon.start()
        with Client(daemon.endpoint, curve_keys_dir=str(keys)) as client:
            assert client.synthesize("Encrypted.", "joe").duration > 0.3
        with pytest.raises(VoxpipeError) as err:
            Client(daemon.endpoint, curve_keys_dir=str(stranger), connect_timeout=2.0)
        assert err.value.code == "unavailable"
        with pytest.raises(VoxpipeError, match="missing CURVE key file"):
            Client(daemon.endpoint, curve_keys_dir=str(tmp_path / "nowhere"))
    finally:
        os.environ.pop("VOXPIPE_CURVE_DIR", None)
        daemon.stop()


# ---- soak -----------------------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.slow
def test_short_soak_with_worker_kills_loses_nothing(tmp_path):
    with Daemon(tmp_path, workers=2) as daemon:
        report = run_async(soak(daemon.endpoint, duration=15.0, concurrency=3, kill_every=4.0))
    assert report.kills >= 3
    assert report.lost == 0, report
    assert report.answered_audio > 0
    assert report.checked == report.answered_audio and report.seams == 0, report  # each equals its re-render
    assert set(report.answered_error) <= {"retries_exhausted", "busy"}, report
    assert report.shm_free_after == report.shm_free_before, report
    for name, before in report.rss_before.items():
        assert report.rss_after[name] - before < 64 * 2**20, report
