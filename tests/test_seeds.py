"""Every request runs with a concrete seed, and reports it: the seed it names, or one the
daemon draws once and keeps. Rendering again with the reported seed gives the same audio."""
from __future__ import annotations

import numpy as np
import pytest

from tests.daemon_proc import same_audio
from voxpipe.config import Config
from voxpipe.ipc.exchange import RequestExchange
from voxpipe.ipc.messages import Fragment, Pong, SynthesisRequest, synthesis_options
from voxpipe.stages.frontend.planner import Planner
from voxpipe.stages.voices import VoiceCatalog

TEXT = "A first sentence to speak. And a second one, a little longer than the first."


def _plan(seed: int | None):
    config = Config()
    planner = Planner(config, VoiceCatalog(config.voices_path()))
    return planner.plan(SynthesisRequest("r", TEXT, "joe", False, synthesis_options(seed=seed)), deadline=1e12)


def test_every_chunk_gets_a_concrete_seed_from_the_plan():
    named = _plan(40)
    assert named.seed == 40 and [c.seed for c in named.chunks] == [40 + i for i in range(len(named.chunks))]
    drawn = [_plan(None) for _ in range(3)]
    for plan in drawn:
        assert isinstance(plan.seed, int) and len(plan.chunks) > 1
        assert [c.seed for c in plan.chunks] == [plan.seed + i for i in range(len(plan.chunks))]
    assert len({p.seed for p in drawn}) > 1  # drawn, not fixed


def test_a_resend_carries_the_seed_the_daemon_drew():
    exchange = RequestExchange(SynthesisRequest("r", TEXT, "joe", True, synthesis_options()), "inc-1", 60.0)
    assert exchange.start().options.seed is None
    exchange.feed(Fragment("r", 0, 22050, 3, seed=1234), np.zeros(3, np.int16).tobytes())
    resend = exchange.feed(Pong(0, "inc-2"))  # a new frontend: the request goes again
    assert isinstance(resend, SynthesisRequest)
    assert resend.options.seed == 1234 and resend.resume_samples == 3


@pytest.mark.slow
@pytest.mark.e2e
def test_the_reported_seed_renders_the_same_audio_again(shared_daemon):
    with shared_daemon.client() as client:
        first = client.synthesize(TEXT, "joe")
        again = client.synthesize(TEXT, "joe", seed=first.seed)
        other = client.synthesize(TEXT, "joe", seed=first.seed + 1)
        stream = client.stream(TEXT, "joe", seed=11)
        streamed = np.concatenate([f.samples for f in stream])
        whole = [client.synthesize(TEXT, "joe", seed=11) for _ in range(2)]
    assert isinstance(first.seed, int)
    assert same_audio(first.samples, again.samples) and again.seed == first.seed
    assert not same_audio(first.samples, other.samples)  # the seed matters: the noise is on
    assert stream.result is not None and stream.result.seed == 11
    assert same_audio(whole[0].samples, whole[1].samples) and same_audio(streamed, whole[0].samples)


@pytest.mark.slow
@pytest.mark.e2e
def test_http_names_the_seed_in_a_header(shared_daemon):
    httpx = pytest.importorskip("httpx")
    body = {"model": "tts-1", "input": TEXT, "voice": "joe", "response_format": "pcm"}
    first = httpx.post(shared_daemon.url + "/v1/audio/speech", json=body, timeout=120)
    assert first.status_code == 200
    seed = int(first.headers["x-voxpipe-seed"])
    again = httpx.post(shared_daemon.url + "/v1/audio/speech", json={**body, "seed": seed}, timeout=120)
    assert int(again.headers["x-voxpipe-seed"]) == seed
    assert same_audio(np.frombuffer(first.content, np.int16), np.frombuffer(again.content, np.int16))
