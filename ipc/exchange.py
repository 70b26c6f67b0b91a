"""The client side of one synthesis request, without any socket: `RequestExchange`.

Both clients (sync and asyncio) drive the same exchange with their own I/O. They hand it
every message meant for the request (its fragments, its Result or Error) and every
keepalive Pong, and it answers with what to do next:

- a `SynthesisRequest`: put it on the wire (the first send, or a resend);
- an `AudioFragment`: give it to the caller;
- a `Result`: the request is complete;
- None: nothing to do (a duplicate fragment, a pong from the same frontend);

and raises `VoxpipeError` when the request fails. When the caller stops listening, for
whatever reason, `leave()` gives the Cancel to send if the daemon may still be at work.

Recovery from a frontend restart. The frontend keeps no state across restarts, so a
request in flight when it died is lost. Clients learn of it from a Pong carrying another
frontend incarnation than the one they last knew, and resend the same request (same id)
with `resume_samples` set to the samples already received: the new frontend relays only
the audio after that, so the caller sees every sample exactly once.

Fragment numbering. The frontend numbers a request's fragments from 0; a new frontend
numbers a resent request's fragments from 0 again. Within one such run a fragment whose
index was already seen is a duplicate and dropped; one that skips an index means audio
was lost, and the request fails. A resend may turn out needless (the restart happened
before the request was first sent, so the current frontend already has it): it answers
`duplicate`, which the exchange takes as "keep going" and the numbering continues.
Callers get fragments numbered 0, 1, 2... across resends.

Seeds. A request that names no seed gets one drawn by the frontend that plans it; its
fragments carry it, and the exchange puts it into the request, so a resend renders the
same audio and what follows joins what the caller has without a seam.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.messages import Cancel, Error, Fragment, Pong, Result, SynthesisRequest, TimelineEvent, WordSpan

if TYPE_CHECKING:  # numpy loads on the first audio, after the request is on its way
    import numpy as np

DEADLINE_GRACE_S = 5.0  # the client waits this much past the request's own timeout


class Word(NamedTuple):
    """A word of the (normalized) text and when it is spoken, in seconds of the request's audio."""

    text: str
    start: float
    end: float


def words_in_seconds(spans: list[WordSpan], sample_rate: int) -> list[Word]:
    return [Word(w.text, w.start / sample_rate, w.end / sample_rate) for w in spans]


@dataclass
class AudioFragment:
    index: int
    samples: np.ndarray  # int16 PCM, mono
    sample_rate: int
    received_at: float  # time.monotonic()
    chunks_done: int = 0  # progress of the request when this fragment was cut
    chunks: int = 0
    words: list[Word] = field(default_factory=list)  # the words that end inside this fragment


@dataclass
class Audio:
    request_id: str
    samples: np.ndarray  # int16 PCM, mono
    sample_rate: int
    fragments: int
    chunks: int
    timings: dict[str, float] = field(default_factory=dict)
    words: list[Word] = field(default_factory=list)  # every word, in order, with its start and end
    seed: int | None = None  # the seed it was rendered with: passing it as `seed` renders it again

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def as_float(self) -> np.ndarray:
        import numpy as np

        return self.samples.astype(np.float32) / 32767.0

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write by extension (.wav, .flac, .ogg) through soundfile."""
        import soundfile

        soundfile.write(os.fspath(path), self.samples, self.sample_rate)


Step = SynthesisRequest | AudioFragment | Result | None


class RequestExchange:
    """One request's progress as seen by a client: samples received, fragment numbering,
    the frontend incarnation serving it, and whether it has ended."""

    def __init__(self, request: SynthesisRequest, incarnation: str, timeout_s: float) -> None:
        self.request = request
        self.request_id = request.request_id
        self.incarnation = incarnation  # the frontend we believe holds the request
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s + DEADLINE_GRACE_S
        # samples the caller holds: what it had before (a request resumed from another
        # daemon) plus what this exchange handed it; a resend asks for what comes after
        self.received = max(0, request.resume_samples)
        self.fragments = 0  # fragments handed to the caller
        self.finished = False  # the daemon ended it (Result or Error): no Cancel needed
        self.resends = 0
        self._over = False  # ended one way or another: later messages are ignored
        self._next_index = 0  # the frontend's next fragment index in the current run
        self._run_open = False  # resent: the next answer tells which numbering follows
        self._index_before_resend = 0
        self.words: list[Word] = []  # every word received so far, in seconds
        self.timeline: list[TimelineEvent] = []  # with the timeline option: every step, and each arrival

    # ---- what the transport calls ------------------------------------------------------
    def start(self) -> SynthesisRequest:
        return self.request

    def feed(self, message: Any, payload: bytes | None = None) -> Step:
        """Take one message for this request (or a keepalive Pong); say what to do."""
        if self._over:
            return None
        if isinstance(message, Pong):
            return self._on_pong(message)
        if isinstance(message, Fragment):
            return self._on_fragment(message, payload)
        if isinstance(message, Result):
            return self._on_result(message)
        if isinstance(message, Error):
            return self._on_error(message)
        return None

    def leave(self) -> Cancel | None:
        """The caller stops here (done, failed, timed out or no longer listening): the
        Cancel to send if the daemon may still be working on the request, once."""
        self._over = True
        if self.finished:
            return None
        self.finished = True
        return Cancel(self.request_id)

    def timed_out(self) -> VoxpipeError:
        """The transport saw the deadline pass: the error to raise (it sends Cancel)."""
        return VoxpipeError("timeout", "no answer from the daemon in time", self.request_id)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # ---- transitions ---------------------------------------------------------------------
    def _on_pong(self, pong: Pong) -> SynthesisRequest | None:
        if not pong.incarnation or pong.incarnation == self.incarnation:
            return None
        # A new frontend: the request was lost with the old one. Ask again for the rest.
        self.incarnation = pong.incarnation
        if not self._run_open:
            self._index_before_resend = self._next_index
        self._run_open = True
        self.resends += 1
        self.request.resume_samples = self.received
        return self.request

    def _on_fragment(self, message: Fragment, payload: bytes | None) -> AudioFragment | None:
        arrived = time.monotonic()
        import numpy as np

        samples = np.frombuffer(payload or b"", dtype=np.int16)
        if len(samples) != message.samples:
            self._fail("internal", f"fragment {message.index} carries {len(samples)} samples, "
                                   f"announced {message.samples}", ended=False)
        if self._run_open:
            # The first fragment after a resend says which run follows: a new frontend
            # starts at 0; the old numbering goes on if the resend was needless.
            if message.index not in (0, self._index_before_resend):
                self._fail("internal", f"fragment {message.index} after a resend; expected 0 or "
                                       f"{self._index_before_resend}", ended=False)
            self._run_open = False
            self._next_index = message.index
        if message.index < self._next_index:
            return None  # already have it
        if message.index > self._next_index:
            self._fail("internal", f"fragment {message.index} arrived while {self._next_index} was due: "
                                   "audio was lost on the way", ended=False)
        self._next_index += 1
        words = words_in_seconds(message.words, message.sample_rate)
        self.words += words
        if message.seed is not None and self.request.options.seed is None:
            # The daemon drew the request's seed: a resend must render with the same one.
            self.request.options.seed = message.seed
        if message.timeline:
            self.timeline += message.timeline
            sent = max(event.end for event in message.timeline)
            self.timeline.append(TimelineEvent("socket", f"fragment {self.fragments} to the client", -1, sent,
                                               arrived))
        fragment = AudioFragment(self.fragments, samples, message.sample_rate, time.monotonic(),
                                 message.chunks_done, message.chunks, words)
        self.fragments += 1
        self.received += len(samples)
        return fragment

    def _on_result(self, result: Result) -> Result:
        if result.samples != self.received:
            self._fail("internal", f"the daemon sent {result.samples} samples, {self.received} arrived")
        self.finished = self._over = True
        self.timeline += result.timeline
        result.fragments = self.fragments  # the frontend counts only since the last resend
        self.words += words_in_seconds(result.words, result.sample_rate)
        return result

    def _on_error(self, error: Error) -> None:
        if error.code == "duplicate" and self.resends:
            # The frontend already serves this request (it got it after the restart we
            # reacted to): the resend was needless and the old numbering goes on.
            if self._run_open:
                self._run_open = False
                self._next_index = self._index_before_resend
            return None
        self._fail(error.code, error.message)

    def _fail(self, code: str, message: str, ended: bool = True) -> None:
        """Raise; `ended` says the daemon is done with the request (else the caller cancels)."""
        self.finished = ended
        self._over = True
        raise VoxpipeError(code, message, self.request_id)


def collect(request_id: str, fragments: list[AudioFragment], result: Result) -> Audio:
    """The whole audio of a finished request from its fragments."""
    import numpy as np

    samples = np.concatenate([f.samples for f in fragments]) if fragments else np.zeros(0, np.int16)
    words = [w for f in fragments for w in f.words] + words_in_seconds(result.words, result.sample_rate)
    return Audio(request_id, samples, result.sample_rate, result.fragments, result.chunks, dict(result.timings),
                 words, result.seed)
