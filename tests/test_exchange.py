"""The client core on its own: message sequences in, what to send / yield / raise out."""
from __future__ import annotations

import numpy as np
import pytest

from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.exchange import AudioFragment, RequestExchange, collect
from voxpipe.ipc.messages import Cancel, Error, Fragment, Pong, Result, SynthesisOptions, SynthesisRequest

RATE = 22050
RID = "r1"


def exchange(timeout: float = 30.0) -> RequestExchange:
    return RequestExchange(SynthesisRequest(RID, "Hello.", "joe", True, SynthesisOptions()), "inc-a", timeout)


def audio(start: int, count: int) -> np.ndarray:
    """Samples numbered by their position in the request, so repeats and gaps show."""
    return np.arange(start, start + count, dtype=np.int16)


def fragment(index: int, samples: np.ndarray, chunks_done: int = 1, chunks: int = 3) -> tuple[Fragment, bytes]:
    return Fragment(RID, index, RATE, len(samples), None, chunks_done, chunks), samples.tobytes()


def result(samples: int, fragments: int, chunks: int = 3) -> Result:
    return Result(RID, RATE, samples, fragments, chunks, {"total_s": 0.1})


def test_normal_request_yields_fragments_in_order_then_the_result():
    ex = exchange()
    assert ex.start().request_id == RID and ex.start().resume_samples == 0
    got = [ex.feed(*fragment(i, audio(100 * i, 100), i + 1)) for i in range(3)]
    assert all(isinstance(f, AudioFragment) for f in got)
    assert [f.index for f in got] == [0, 1, 2] and [f.chunks_done for f in got] == [1, 2, 3]
    assert ex.feed(Pong(0, "inc-a")) is None  # the same frontend: nothing to do
    final = ex.feed(result(300, 3))
    assert isinstance(final, Result) and ex.finished
    assert ex.leave() is None  # finished: no Cancel
    whole = collect(RID, got, final)
    assert np.array_equal(whole.samples, audio(0, 300)) and whole.fragments == 3 and whole.sample_rate == RATE


def test_frontend_restart_mid_request_resends_for_the_rest_and_no_sample_repeats():
    ex = exchange()
    got = [ex.feed(*fragment(0, audio(0, 120))), ex.feed(*fragment(1, audio(120, 80)))]
    resend = ex.feed(Pong(0, "inc-b"))  # a new frontend answers the keepalive
    assert isinstance(resend, SynthesisRequest)
    assert resend.request_id == RID and resend.resume_samples == 200 and ex.resends == 1
    assert ex.feed(Pong(0, "inc-b")) is None  # told once, not again
    # The new frontend relays only what follows sample 200, numbering from 0 again.
    got += [ex.feed(*fragment(0, audio(200, 50))), ex.feed(*fragment(1, audio(250, 50)))]
    final = ex.feed(result(300, 2))  # the frontend's totals: all samples, its own fragments
    assert [f.index for f in got] == [0, 1, 2, 3]
    assert np.array_equal(np.concatenate([f.samples for f in got]), audio(0, 300))
    assert isinstance(final, Result) and final.fragments == 4


def test_restart_before_any_audio_resends_from_zero():
    ex = exchange()
    resend = ex.feed(Pong(0, "inc-b"))
    assert isinstance(resend, SynthesisRequest) and resend.resume_samples == 0
    assert isinstance(ex.feed(*fragment(0, audio(0, 10))), AudioFragment)


def test_needless_resend_answered_duplicate_keeps_the_request_going():
    # The request reached the new frontend (the restart came before it was sent): our
    # resend is refused as a duplicate and the fragments go on with their numbering.
    ex = exchange()
    ex.feed(*fragment(0, audio(0, 100)))
    assert isinstance(ex.feed(Pong(0, "inc-b")), SynthesisRequest)
    assert isinstance(ex.feed(*fragment(1, audio(100, 100))), AudioFragment)  # already in flight
    assert ex.feed(Error(RID, "duplicate", "request r1 is already being served")) is None
    assert isinstance(ex.feed(*fragment(2, audio(200, 100))), AudioFragment)
    assert isinstance(ex.feed(result(300, 3)), Result)


def test_duplicate_fragment_is_dropped():
    ex = exchange()
    ex.feed(*fragment(0, audio(0, 100)))
    assert ex.feed(*fragment(0, audio(0, 100))) is None
    assert isinstance(ex.feed(*fragment(1, audio(100, 100))), AudioFragment)
    assert ex.received == 200 and ex.fragments == 2


def test_fragment_that_skips_one_fails_and_asks_for_a_cancel():
    ex = exchange()
    ex.feed(*fragment(0, audio(0, 100)))
    with pytest.raises(VoxpipeError) as info:
        ex.feed(*fragment(2, audio(200, 100)))  # 1 never came: audio would be missing
    assert info.value.code == "internal" and info.value.request_id == RID
    assert ex.feed(*fragment(1, audio(100, 100))) is None  # over: later messages are ignored
    assert ex.leave() == Cancel(RID)  # the daemon is still working on it
    assert ex.leave() is None  # once


def test_fragment_whose_payload_differs_from_its_announcement_fails():
    ex = exchange()
    message, payload = fragment(0, audio(0, 100))
    with pytest.raises(VoxpipeError, match="carries 50 samples, announced 100"):
        ex.feed(message, payload[:100])


def test_result_that_disagrees_with_the_audio_received_fails():
    ex = exchange()
    ex.feed(*fragment(0, audio(0, 100)))
    with pytest.raises(VoxpipeError, match="sent 150 samples, 100 arrived"):
        ex.feed(result(150, 2))


def test_error_raises_with_the_daemons_code_and_needs_no_cancel():
    ex = exchange()
    ex.feed(*fragment(0, audio(0, 100)))
    with pytest.raises(VoxpipeError) as info:
        ex.feed(Error(RID, "voice_unavailable", "voice joe was removed"))
    assert (info.value.code, info.value.request_id) == ("voice_unavailable", RID)
    assert ex.finished and ex.leave() is None


def test_duplicate_error_to_a_first_send_is_an_error():
    ex = exchange()
    with pytest.raises(VoxpipeError) as info:
        ex.feed(Error(RID, "duplicate", "request r1 is already being served"))
    assert info.value.code == "duplicate"


def test_leaving_unfinished_cancels_once_and_timeout_is_typed():
    ex = exchange(timeout=-10.0)  # deadline already past (the grace included)
    assert ex.remaining() < 0
    assert ex.timed_out().code == "timeout"
    assert ex.leave() == Cancel(RID) and ex.leave() is None
