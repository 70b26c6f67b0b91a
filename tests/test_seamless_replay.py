"""A worker killed while a chunk is half streamed: the chunk runs again, from its seed,
and the client's audio goes on where it stopped. Noise and sampling on, no seed given
(the daemon draws one): the audio equals, within 4 int16 steps, an undisturbed render
with the seed the result reports."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tests.daemon_proc import Daemon, restored, same_audio
from voxpipe.ipc.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GSV_VOICE = "gsvkill"
PIPER_TEXT = ("The committee met on a grey and windy morning by the harbour to decide at last what should be done "
              "about the old lighthouse that had stood empty on the rocks for as long as anyone could remember.")
GSV_TEXT = "Hello there, this sentence is spoken by a voice with random weights while a worker is killed."


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from voxpipe.stages import families

    voices = tmp_path_factory.mktemp("replay-voices")
    families.get("gpt-sovits").write_random_voice(voices, GSV_VOICE, seed=3, version="v2")
    # Threads fixed for joe's onnx sessions (GPT-SoVITS decides its tokens at a fixed
    # count already, tests/test_gsv_threads.py): the replay must run as the first render did.
    with Daemon(tmp_path_factory.mktemp("replay"), workers=2, voices_dir=str(voices), preload=["joe", GSV_VOICE],
                supervisor={"restart_budget": 100}, worker={"max_threads": 1}) as d:
        yield d


def holding_worker(daemon: Daemon) -> tuple[str, int] | None:
    """The worker with a chunk in flight (started, not done), and its pid; None if none."""
    with daemon.client() as client:
        status = client.status()
    pids = {p["name"]: p["pid"] for p in status["processes"] if p["role"] == "worker"}
    busy = [name for name, q in status["queues"]["workers"].items() if q["in_flight"]]
    return (busy[0], pids[busy[0]]) if busy else None


def killed_mid_chunk(daemon: Daemon, voice: str, text: str, **options: object) -> tuple[np.ndarray, int]:
    """Stream the text, SIGKILL the worker holding its chunk after the first fragment;
    (the audio the client got, the seed its result reports)."""
    restored(daemon)
    with Client(daemon.endpoint, timeout=300) as client:
        stream = client.stream(text, voice, first_chunk=False, engine_stream=True, **options)
        fragments, victim = [], None
        for fragment in stream:
            fragments.append(fragment.samples)
            if victim is None:
                victim = holding_worker(daemon)
                assert victim is not None, "the chunk finished before the kill: the test needs a longer one"
                os.kill(victim[1], signal.SIGKILL)
        assert stream.result is not None and stream.result.seed is not None
    assert len(fragments) > 1
    assert f"worker {victim[0]} (pid {victim[1]})" in daemon.log()
    return np.concatenate(fragments), stream.result.seed


def undisturbed(daemon: Daemon, voice: str, text: str, seed: int, **options: object) -> np.ndarray:
    restored(daemon)
    with Client(daemon.endpoint, timeout=300) as client:
        return client.synthesize(text, voice, first_chunk=False, engine_stream=True, seed=seed, **options).samples


def test_piper_with_noise_replays_the_killed_chunk_seamlessly(daemon):
    audio, seed = killed_mid_chunk(daemon, "joe", PIPER_TEXT)
    assert same_audio(audio, undisturbed(daemon, "joe", PIPER_TEXT, seed))


def test_gpt_sovits_sampling_replays_the_killed_chunk_seamlessly(daemon):
    sampling = {"top_k": 20, "temperature": 1.0}
    audio, seed = killed_mid_chunk(daemon, GSV_VOICE, GSV_TEXT, **sampling)
    assert same_audio(audio, undisturbed(daemon, GSV_VOICE, GSV_TEXT, seed, **sampling))
