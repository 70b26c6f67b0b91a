"""The gateway's one link to the daemon: a single AsyncClient shared by every HTTP
request (many concurrent requests over its one socket), plus the gateway's own limits
and counters."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator, Mapping

import numpy as np

from voxpipe.config import Config
from voxpipe.ipc.client import AsyncClient, AudioFragment
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.exchange import Word, words_in_seconds
from voxpipe.ipc.messages import Result, draw_seed
from voxpipe.stages.http.errors import HttpError

log = logging.getLogger("voxpipe.http")

STATUS_MAX_AGE_S = 0.25  # probes arriving together share one status query


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8192 * 1024
    max_text_chars: int = 1_000_000
    max_streams: int = 64
    send_timeout_s: float = 30.0
    request_timeout_s: float = 300.0
    max_reference_bytes: int = 2048 * 1024  # a request's own reference clip (http.max_reference_kib)

    @classmethod
    def from_config(cls, config: Config) -> "Limits":
        http = config.http
        return cls(max_body_bytes=http.max_body_kib * 1024,
                   max_text_chars=http.max_text_chars or config.limits.max_text_chars,
                   max_streams=http.max_streams, send_timeout_s=http.send_timeout_s,
                   request_timeout_s=config.limits.request_timeout_s,
                   max_reference_bytes=http.max_reference_kib * 1024)


@dataclass
class SpeechRequest:
    """What every route turns its parameters into."""

    text: str
    voice: str
    options: dict[str, Any] = field(default_factory=dict)  # SynthesisOptions fields (a Reference included)

    def settle_seed(self) -> int:
        """The request's seed, drawn here when it names none: the response's headers go
        out before any audio, and `X-Voxpipe-Seed` must name the seed it renders with."""
        if self.options.get("seed") is None:
            self.options["seed"] = draw_seed()
        return int(self.options["seed"])


class Synthesis:
    """A started request whose first answer is already in hand: iterate for int16 sample
    arrays; `aclose()` cancels it in the daemon if it has not finished."""

    def __init__(self, gateway: "GatewayBase", stream: AsyncGenerator[AudioFragment | Result, None],
                 first: AudioFragment | Result) -> None:
        self._gateway, self._stream, self._first = gateway, stream, first
        self.sample_rate = first.sample_rate
        self.result: Result | None = first if isinstance(first, Result) else None
        self.words: list[Word] = []  # of the fragments yielded so far, then the Result's
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        if isinstance(self._first, AudioFragment):
            self.words += self._first.words
            yield self._first.samples
        if self.result is not None:
            self.words += words_in_seconds(self.result.words, self.result.sample_rate)
            return
        try:
            async for item in self._stream:
                if isinstance(item, AudioFragment):
                    self.words += item.words
                    yield item.samples
                else:
                    self.result = item
                    self.words += words_in_seconds(item.words, item.sample_rate)
        except VoxpipeError as exc:
            raise HttpError.from_voxpipe(exc) from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()  # the client library sends Cancel if the request is still running
        finally:
            self._gateway.release(completed=self.result is not None)


class GatewayBase:
    """What the routes need of a gateway besides a daemon: limits, voice aliases, text
    checks, stream slots and counters. `Gateway` reaches one daemon; a fleet's ingress
    (voxpipe.daemon.cluster) reaches many through the same interface."""

    def __init__(self, limits: Limits, voice_aliases: Mapping[str, str] | None = None) -> None:
        self.limits = limits
        self.voice_aliases = dict(voice_aliases or {})  # OpenAI route: name -> voice (http.voice_aliases)
        self.draining = False
        self.streams = 0
        self.counts = {"requests": 0, "completed": 0, "rejected": 0, "aborted": 0}

    async def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def _stream(self, request: SpeechRequest) -> AsyncGenerator[AudioFragment | Result, None]:
        """The request's answers: AudioFragments, then its Result."""
        raise NotImplementedError

    async def voices(self) -> list[str]:
        return list((await self.status()).get("voices", []))

    async def resolve_alias(self, name: str) -> str:
        """The voice that speaks for `name`: an alias's target, unless a voice of that name exists."""
        target = self.voice_aliases.get(name)
        if target is None:
            return name
        voices = await self.voices()
        if name in voices:
            return name
        if target not in voices:
            raise HttpError("unknown_voice", f"voice {name!r} is an alias of {target!r} (http.voice_aliases), "
                                             f"which is not a voice of the daemon; known voices: {', '.join(voices)}")
        return target

    def check_text(self, text: object, param: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise HttpError("empty_text", f"'{param}' must be a non-empty string", param=param)
        if len(text) > self.limits.max_text_chars:
            raise HttpError("too_long", f"'{param}' has {len(text)} characters; the limit is "
                                        f"{self.limits.max_text_chars}", param=param)
        return text

    async def open(self, request: SpeechRequest) -> Synthesis:
        """Start a request and wait for its first audio (or its error), so that an error
        can still get an HTTP status of its own."""
        self.counts["requests"] += 1
        if self.draining:
            self.counts["rejected"] += 1
            raise HttpError("shutting_down", "the daemon is shutting down")
        if self.streams >= self.limits.max_streams:
            self.counts["rejected"] += 1
            raise HttpError("too_many_streams", f"{self.streams} audio responses in progress; try again later")
        self.streams += 1
        stream = self._stream(request)
        try:
            first = await stream.__anext__()
        except VoxpipeError as exc:
            self.release(completed=False, rejected=True)
            raise HttpError.from_voxpipe(exc) from None
        except TypeError as exc:  # an option the client library does not know
            self.release(completed=False, rejected=True)
            raise HttpError("bad_option", str(exc)) from None
        except BaseException:
            await stream.aclose()
            self.release(completed=False)
            raise
        return Synthesis(self, stream, first)

    def release(self, completed: bool, rejected: bool = False) -> None:
        """A stream slot is given back; count how its request ended."""
        self.streams -= 1
        key = "completed" if completed else "rejected" if rejected else "aborted"
        self.counts[key] += 1

    def stats(self) -> dict[str, Any]:
        return {"streams": self.streams, **self.counts}


class Gateway(GatewayBase):
    def __init__(self, endpoint: str, limits: Limits, curve_keys_dir: str | None = None,
                 voice_aliases: Mapping[str, str] | None = None) -> None:
        super().__init__(limits, voice_aliases)
        self.endpoint = endpoint
        self._curve_keys_dir = curve_keys_dir  # a tcp:// endpoint is CURVE-only
        self.client = self._new_client()
        self.connected = False
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._status_lock = asyncio.Lock()

    def _new_client(self) -> AsyncClient:
        return AsyncClient(self.endpoint, timeout=self.limits.request_timeout_s, curve_keys_dir=self._curve_keys_dir)

    async def connect(self, attempt_s: float = 2.0, warn_after_s: float = 10.0) -> None:
        """Connect, retrying until the frontend answers (it may still be starting); say
        why once it has taken long (a wrong key, say), since the supervisor only sees a
        stage that is not ready."""
        started, warned = time.monotonic(), False
        while True:
            try:
                await self.client.connect(timeout=attempt_s)
                self.connected = True
                return
            except VoxpipeError as exc:
                if exc.code != "unavailable":
                    raise
                if not warned and time.monotonic() - started > warn_after_s:
                    log.warning("still connecting to the daemon at %s: %s", self.endpoint, exc.message)
                    warned = True
                self.client = self._new_client()

    async def close(self) -> None:
        await self.client.close()

    async def status(self) -> dict[str, Any]:
        """The daemon's status dict, at most STATUS_MAX_AGE_S old. One query at a time: the
        client library's status replies share one queue."""
        async with self._status_lock:
            if self._status is None or time.monotonic() - self._status_at > STATUS_MAX_AGE_S:
                try:
                    self._status = await self.client.status(timeout=2.0)
                except (asyncio.TimeoutError, VoxpipeError):
                    raise HttpError("unavailable", "the daemon did not answer a status query") from None
                self._status_at = time.monotonic()
            return self._status

    def _stream(self, request: SpeechRequest) -> AsyncGenerator[AudioFragment | Result, None]:
        return self.client.stream(request.text, request.voice, **request.options)  # type: ignore[return-value]
