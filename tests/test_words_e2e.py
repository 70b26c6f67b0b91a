"""Word timings through a real daemon (joe, noise off, several chunks joined with the
default crossfade): the client library whole and streamed, `voxpipe say --words`, and
the gateway's captioned-speech route."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from voxpipe.stages.families.words import text_words
from voxpipe.stages.text.normalize import normalize
ROOT = Path(__file__).resolve().parent.parent
NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}
TEXT = ("The lighthouse keeper climbed the stairs at dusk. Of the ships at sea that night, only two "
        "were late. It is forty-two minutes past nine, and the fog is rolling in.")


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(shared_daemon):
    return shared_daemon


def check_words(words: list, duration: float) -> None:
    """In order, every word of the (normalized) text, inside the audio."""
    assert [w[0] for w in words] == text_words(normalize(TEXT))
    last = 0.0
    for _, start, end in words:
        assert last - 1e-6 <= start <= end <= duration + 1e-6
        last = end
    assert words[-1][2] > 0.8 * duration  # they reach the last sentence's end, not bunched at the start


def test_whole_and_streamed_words(daemon):
    with daemon.client() as client:
        audio = client.synthesize(TEXT, "joe", **NOISE_OFF)
        stream = client.stream(TEXT, "joe", **NOISE_OFF)
        fragments = list(stream)
    assert audio.chunks >= 3
    check_words(audio.words, audio.duration)
    assert len(fragments) >= 2
    streamed = [w for f in fragments for w in f.words]
    assert streamed == stream.words
    position = 0
    for fragment in fragments:  # each fragment carries the words that end inside it
        position += len(fragment.samples)
        assert all(w.end <= position / fragment.sample_rate + 1e-9 for w in fragment.words)
    assert [w.text for w in streamed] == [w.text for w in audio.words]
    np.testing.assert_allclose([w[1:] for w in streamed], [w[1:] for w in audio.words], atol=1e-6)


def test_say_writes_a_words_file(daemon, tmp_path):
    out, words = tmp_path / "a.wav", tmp_path / "a.json"
    said = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "say", "--endpoint", daemon.endpoint,
                           "--noise-scale", "0", "--noise-w", "0", "-o", str(out), "--words", str(words), TEXT],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert said.returncode == 0, said.stderr
    rows = json.loads(words.read_text(encoding="utf-8"))
    assert all(set(r) == {"word", "start", "end"} for r in rows)
    info = soundfile.info(str(out))
    check_words([(r["word"], r["start"], r["end"]) for r in rows], info.frames / info.samplerate)


def test_captioned_speech_whole_and_streamed(daemon):
    httpx = pytest.importorskip("httpx")
    body = {"input": TEXT, "voice": "joe", "response_format": "wav", **NOISE_OFF}
    with httpx.Client(base_url=daemon.url, timeout=120) as http:
        whole = http.post("/v1/audio/captioned_speech", json=body)
        assert whole.status_code == 200, whole.text
        data = whole.json()
        samples, rate = soundfile.read(io.BytesIO(base64.b64decode(data["audio"])), dtype="int16")
        assert rate == data["sample_rate"] and len(samples) / rate == pytest.approx(data["duration"], abs=1e-3)
        check_words([(w["word"], w["start"], w["end"]) for w in data["words"]], data["duration"])

        with http.stream("POST", "/v1/audio/captioned_speech", json={**body, "response_format": "pcm",
                                                                     "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            events = [json.loads(line) for line in response.iter_lines() if line]
        assert len(events) >= 3 and events[-1]["done"] and not any(e.get("done") for e in events[:-1])
        pcm = np.frombuffer(b"".join(base64.b64decode(e["audio"]) for e in events), dtype=np.int16)
        assert len(pcm) / events[-1]["sample_rate"] == pytest.approx(events[-1]["duration"], abs=1e-3)
        words = [(w["word"], w["start"], w["end"]) for e in events for w in e["words"]]
        check_words(words, events[-1]["duration"])

        bad = http.post("/v1/audio/captioned_speech", json={**body, "stream": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream"
