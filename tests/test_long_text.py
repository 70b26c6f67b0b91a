"""A text of the largest size allowed (1,000,000 characters by default) is accepted through
the socket and over HTTP, and its first audio arrives while its text is still being planned:
the plan grows as the audio goes, so neither memory nor first audio grows with the text."""
from __future__ import annotations

import pytest

from voxpipe.config import FrontendConfig, LimitsConfig
from tests.daemon_proc import longform

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_TEXT_CHARS = LimitsConfig().max_text_chars  # the shared daemon runs the default limits


def largest_text() -> str:
    """The long form over and over, to exactly the limit (a book's length of paragraphs)."""
    form = longform()
    text = "\n\n".join([form] * (MAX_TEXT_CHARS // len(form) + 1))
    return text[:MAX_TEXT_CHARS]


def test_the_default_limit_takes_a_book():
    assert MAX_TEXT_CHARS >= 1_000_000


def test_a_megabyte_text_streams_before_its_plan_is_complete(shared_daemon):
    text = largest_text()
    with shared_daemon.client() as client:
        stream = client.stream(text, "joe")
        fragments = iter(stream)
        first = next(fragments)
        status = client.status()
        stream.close()  # cancels the rest (hours of audio)
    assert len(first.samples) > 0
    assert first.chunks == 0, "the plan's total is known only once the whole text is read"
    assert status["planning"] >= 1
    # Memory follows what is in flight: no more chunks planned ahead than the bound.
    queues = status["queues"]
    held = queues["queued"] + sum(w["in_flight"] for w in queues["workers"].values())
    assert 0 < held <= FrontendConfig().plan_ahead_chunks


def test_a_megabyte_text_is_accepted_over_http(shared_daemon):
    body = {"model": "voxpipe", "voice": "joe", "input": largest_text(), "response_format": "pcm"}
    with httpx.stream("POST", shared_daemon.url + "/v1/audio/speech", json=body, timeout=120) as reply:
        assert reply.status_code == 200, reply.read()
        chunks = reply.iter_bytes()  # kept: dropping the iterator closes the connection
        first = next(chunks)
        with shared_daemon.client() as client:
            planning = client.status()["planning"]
    assert len(first) > 0
    assert planning >= 1
