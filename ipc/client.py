"""The client library: a sync `Client` and an asyncio `AsyncClient`.

Both keep one socket per client object (never one per request), check the protocol
version when they connect, and offer `synthesize(...)` (the whole audio) and
`stream(...)` (fragments as they arrive). Errors come back as `VoxpipeError` with the
daemon's typed code.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

import numpy as np
import zmq
import zmq.asyncio

from voxpipe.ipc import codec, sockets
from voxpipe.ipc.errors import ProtocolError, VoxpipeError
from voxpipe.ipc.security import SecurityError, needs_curve, secure_client
from voxpipe.ipc.messages import (PROTOCOL_VERSION, Cancel, Error, Fragment, Hello, Ping, Pong, Result, StatusQuery,
                          StatusReply, SynthesisOptions, SynthesisRequest, Welcome)

DEFAULT_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5.0
PROBE_S = 1.0  # while waiting, ping after this much silence to learn of a frontend restart


class _FrontendRestarted(Exception):
    """The frontend was replaced while a request was in flight: resend it."""


@dataclass
class AudioFragment:
    index: int
    samples: np.ndarray  # int16 PCM, mono
    sample_rate: int
    received_at: float  # time.monotonic()
    chunks_done: int = 0  # progress of the request when this fragment was cut
    chunks: int = 0


@dataclass
class Audio:
    request_id: str
    samples: np.ndarray  # int16 PCM, mono
    sample_rate: int
    fragments: int
    chunks: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def as_float(self) -> np.ndarray:
        return self.samples.astype(np.float32) / 32767.0

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write by extension (.wav, .flac, .ogg) through soundfile."""
        import soundfile

        soundfile.write(os.fspath(path), self.samples, self.sample_rate)


def _options(**kwargs: Any) -> SynthesisOptions:
    unknown = set(kwargs) - {f for f in SynthesisOptions.__dataclass_fields__}
    if unknown:
        raise TypeError(f"unknown synthesis option(s): {', '.join(sorted(unknown))}")
    return SynthesisOptions(**kwargs)


def _request(text: str, voice: str, stream: bool, timeout: float | None, request_id: str | None,
             options: dict[str, Any]) -> SynthesisRequest:
    return SynthesisRequest(request_id or uuid.uuid4().hex, text, voice, stream, _options(**options), timeout)


def _secure(sock: zmq.Socket, endpoint: str, keys_dir: str | None) -> None:
    """tcp:// endpoints are CURVE-only: use the given keys or $VOXPIPE_CURVE_DIR."""
    if not needs_curve(endpoint):
        return
    keys_dir = keys_dir or os.environ.get("VOXPIPE_CURVE_DIR")
    if not keys_dir:
        raise VoxpipeError("unavailable", f"{endpoint}: tcp:// endpoints need CURVE keys; pass curve_keys_dir "
                                          "or set VOXPIPE_CURVE_DIR")
    try:
        secure_client(sock, Path(keys_dir))
    except SecurityError as exc:
        raise VoxpipeError("unavailable", str(exc)) from None


def _resend(request: SynthesisRequest, received: int) -> SynthesisRequest:
    """The same request (same id), asking only for the audio after what we have."""
    request.resume_samples = received
    return request


def _decode_reply(frames: list[bytes]) -> tuple[Any, bytes | None]:
    message = codec.decode(frames[0])
    return message, (frames[1] if len(frames) > 1 else None)


def _fragment(message: Fragment, payload: bytes | None) -> AudioFragment:
    samples = np.frombuffer(payload or b"", dtype=np.int16)
    if len(samples) != message.samples:
        raise VoxpipeError("internal", f"fragment {message.index} carries {len(samples)} samples, "
                                       f"announced {message.samples}", message.request_id)
    return AudioFragment(message.index, samples, message.sample_rate, time.monotonic(), message.chunks_done,
                         message.chunks)


def _collect(request_id: str, fragments: list[AudioFragment], result: Result) -> Audio:
    samples = np.concatenate([f.samples for f in fragments]) if fragments else np.zeros(0, np.int16)
    return Audio(request_id, samples, result.sample_rate, result.fragments, result.chunks, dict(result.timings))


class SynthesisStream:
    """Iterate for fragments; `result` holds the final totals once iteration ends.
    Leaving early (break, close(), garbage collection) cancels the request."""

    def __init__(self, client: "Client", request: SynthesisRequest, deadline: float) -> None:
        self._client, self.request_id, self._deadline = client, request.request_id, deadline
        self._request = request
        self.result: Result | None = None
        self._finished = False

    def __iter__(self) -> Iterator[AudioFragment]:
        received = 0
        try:
            while True:
                try:
                    message, payload = self._client._receive(self.request_id, self._deadline)
                except _FrontendRestarted:
                    sockets.send(self._client._sock, _resend(self._request, received))
                    continue
                if isinstance(message, Fragment):
                    fragment = _fragment(message, payload)
                    received += len(fragment.samples)
                    yield fragment
                elif isinstance(message, Result):
                    self.result, self._finished = message, True
                    return
                elif isinstance(message, Error):
                    self._finished = True
                    raise VoxpipeError(message.code, message.message, message.request_id)
        finally:
            self.close()

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._client.cancel(self.request_id)

    def __enter__(self) -> "SynthesisStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A synchronous client; one request at a time per client object (use one client
    per thread, or AsyncClient for many requests over one socket)."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, curve_keys_dir: str | None = None) -> None:
        self.endpoint = endpoint or sockets.default_endpoint()
        self.timeout = timeout
        self._ctx = zmq.Context.instance()
        self._sock = sockets.make_socket(self._ctx, zmq.DEALER)
        _secure(self._sock, self.endpoint, curve_keys_dir)
        self._sock.connect(self.endpoint)
        self.welcome = self._handshake(connect_timeout)

    def _handshake(self, timeout: float) -> Welcome:
        sockets.send(self._sock, Hello(PROTOCOL_VERSION, f"python-sync/{os.getpid()}"))
        message, _ = self._receive("", time.monotonic() + timeout, unavailable=True)
        if isinstance(message, Error):
            self.close()
            raise VoxpipeError(message.code, message.message)
        if not isinstance(message, Welcome):
            raise VoxpipeError("bad_request", f"unexpected handshake reply {type(message).__name__}")
        self.incarnation = message.incarnation
        return message

    def _receive(self, request_id: str, deadline: float, unavailable: bool = False) -> tuple[Any, bytes | None]:
        """Next message for `request_id` ('' for replies that carry none). While a request
        waits, silence is met with a ping; a pong from a new frontend incarnation means the
        request was lost with the old one (raises _FrontendRestarted)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining > 0 and request_id and not self._sock.poll(int(min(remaining, PROBE_S) * 1000) + 1):
                sockets.send(self._sock, Ping(0))
                continue
            if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1):
                if unavailable:
                    self.close()
                    raise VoxpipeError("unavailable", f"no voxpipe daemon answered at {self.endpoint}")
                if request_id:
                    self.cancel(request_id)
                raise VoxpipeError("timeout", "no answer from the daemon in time", request_id or None)
            try:
                message, payload = _decode_reply(self._sock.recv_multipart())
            except ProtocolError as exc:
                raise VoxpipeError("bad_request", f"undecodable reply: {exc}") from None
            if isinstance(message, Pong) and request_id and message.incarnation != self.incarnation:
                self.incarnation = message.incarnation
                raise _FrontendRestarted()
            rid = getattr(message, "request_id", "")
            if rid == request_id or (isinstance(message, Error) and not rid):
                return message, payload
            # else: a late message of an earlier request (cancelled, timed out): skip it

    def stream(self, text: str, voice: str = "joe", *, timeout: float | None = None, request_id: str | None = None,
               **options: Any) -> SynthesisStream:
        timeout = timeout or self.timeout
        request = _request(text, voice, True, timeout, request_id, options)
        sockets.send(self._sock, request)
        return SynthesisStream(self, request, time.monotonic() + timeout + 5.0)

    def synthesize(self, text: str, voice: str = "joe", *, timeout: float | None = None,
                   request_id: str | None = None, **options: Any) -> Audio:
        timeout = timeout or self.timeout
        request = _request(text, voice, False, timeout, request_id, options)
        sockets.send(self._sock, request)
        deadline = time.monotonic() + timeout + 5.0
        fragments: list[AudioFragment] = []
        while True:
            try:
                message, payload = self._receive(request.request_id, deadline)
            except _FrontendRestarted:
                sockets.send(self._sock, _resend(request, sum(len(f.samples) for f in fragments)))
                continue
            if isinstance(message, Fragment):
                fragments.append(_fragment(message, payload))
            elif isinstance(message, Result):
                return _collect(request.request_id, fragments, message)
            elif isinstance(message, Error):
                raise VoxpipeError(message.code, message.message, message.request_id)

    def cancel(self, request_id: str) -> None:
        try:
            sockets.send(self._sock, Cancel(request_id), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        query_id = uuid.uuid4().hex
        sockets.send(self._sock, StatusQuery(query_id))
        deadline = time.monotonic() + timeout
        while True:
            message, _ = self._receive("", deadline)
            if isinstance(message, StatusReply) and message.query_id == query_id:
                return message.status

    def ping(self, timeout: float = 5.0) -> float:
        nonce = int.from_bytes(os.urandom(4), "little")
        started = time.perf_counter()
        sockets.send(self._sock, Ping(nonce))
        deadline = time.monotonic() + timeout
        while True:
            message, _ = self._receive("", deadline)
            if isinstance(message, Pong) and message.nonce == nonce:
                return time.perf_counter() - started

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(timeout=max(0.5, deadline - time.monotonic()))
            if status.get("ready"):
                return status
            if time.monotonic() > deadline:
                raise VoxpipeError("timeout", "the daemon did not become ready in time")
            time.sleep(0.1)

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """An asyncio client: any number of concurrent requests over one socket. Uses
    whatever loop runs it (voxpipe's tools run uvloop when it is installed)."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 curve_keys_dir: str | None = None, on_sent: Callable[[str], None] | None = None) -> None:
        self.endpoint = endpoint or sockets.default_endpoint()
        self.timeout = timeout
        self._curve_keys_dir = curve_keys_dir
        self._on_sent = on_sent  # called with each request id once it is on the wire (for timing)
        self._ctx = zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._queues: dict[str, asyncio.Queue[tuple[Any, bytes | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.welcome: Welcome | None = None

    async def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> "AsyncClient":
        self._sock = sockets.make_socket(self._ctx, zmq.DEALER)  # type: ignore[assignment]
        _secure(self._sock, self.endpoint, self._curve_keys_dir)
        self._sock.connect(self.endpoint)
        queue = self._queues[""] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_loop())
        await self._send(Hello(PROTOCOL_VERSION, f"python-async/{os.getpid()}"))
        try:
            message, _ = await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise VoxpipeError("unavailable", f"no voxpipe daemon answered at {self.endpoint}") from None
        if isinstance(message, Error):
            await self.close()
            raise VoxpipeError(message.code, message.message)
        self.welcome = message
        self._prober = asyncio.create_task(self._probe_loop())
        return self

    async def _probe_loop(self) -> None:
        """While requests wait, ping now and then: a pong from a new frontend incarnation
        means they were lost with the old one, and each is resent."""
        while True:
            await asyncio.sleep(PROBE_S)
            if len(self._queues) > 1:
                await self._send(Ping(0))

    async def _send(self, message: Any) -> None:
        assert self._sock is not None, "call connect() first"
        await self._sock.send_multipart([codec.encode(message)])

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                message, payload = _decode_reply(frames)
            except ProtocolError:
                continue
            if isinstance(message, Pong) and message.nonce == 0:  # our keepalive: only news of a restart
                if self.welcome and message.incarnation != self.welcome.incarnation:
                    self.welcome.incarnation = message.incarnation
                    for rid, queue in self._queues.items():
                        if rid:
                            queue.put_nowait((_FrontendRestarted(), None))
                continue
            rid = getattr(message, "request_id", "")
            if isinstance(message, (StatusReply, Pong)):
                rid = ""
            queue = self._queues.get(rid)
            if queue is not None:
                queue.put_nowait((message, payload))

    async def stream(self, text: str, voice: str = "joe", *, timeout: float | None = None,
                     request_id: str | None = None, resume_samples: int = 0,
                     **options: Any) -> AsyncIterator[AudioFragment | Result]:
        """Yields AudioFragments, then the final Result. `resume_samples` > 0 continues a
        request another daemon began: the audio starts after that many samples (same text,
        voice and seed give the same audio, so nothing is lost or repeated)."""
        if resume_samples < 0:
            raise ValueError(f"resume_samples must be >= 0, not {resume_samples}")
        timeout = timeout or self.timeout
        request = _request(text, voice, True, timeout, request_id, options)
        request.resume_samples = resume_samples
        async for item in self._run(request, timeout):
            yield item

    async def synthesize(self, text: str, voice: str = "joe", *, timeout: float | None = None,
                         request_id: str | None = None, **options: Any) -> Audio:
        timeout = timeout or self.timeout
        request = _request(text, voice, False, timeout, request_id, options)
        fragments: list[AudioFragment] = []
        async for item in self._run(request, timeout):
            if isinstance(item, AudioFragment):
                fragments.append(item)
            else:
                return _collect(request.request_id, fragments, item)
        raise VoxpipeError("internal", "stream ended without a result", request.request_id)

    async def _run(self, request: SynthesisRequest, timeout: float) -> AsyncIterator[AudioFragment | Result]:
        rid = request.request_id
        queue = self._queues[rid] = asyncio.Queue()
        finished = False
        received = request.resume_samples  # a frontend restart resumes after all we hold
        try:
            await self._send(request)
            if self._on_sent is not None:
                self._on_sent(rid)
            deadline = time.monotonic() + timeout + 5.0
            while True:
                try:
                    message, payload = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    raise VoxpipeError("timeout", "no answer from the daemon in time", rid) from None
                if isinstance(message, _FrontendRestarted):
                    await self._send(_resend(request, received))
                elif isinstance(message, Fragment):
                    fragment = _fragment(message, payload)
                    received += len(fragment.samples)
                    yield fragment
                elif isinstance(message, Result):
                    finished = True
                    yield message
                    return
                elif isinstance(message, Error):
                    finished = True
                    raise VoxpipeError(message.code, message.message, rid)
        finally:
            self._queues.pop(rid, None)
            if not finished and self._sock is not None and not self._sock.closed:
                await self._send(Cancel(rid))

    async def status(self, timeout: float = 10.0) -> dict[str, Any]:
        query_id = uuid.uuid4().hex
        await self._send(StatusQuery(query_id))
        queue = self._queues[""]
        deadline = time.monotonic() + timeout
        while True:
            message, _ = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            if isinstance(message, StatusReply) and message.query_id == query_id:
                return message.status

    async def close(self) -> None:
        for task in (self._prober, self._reader):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._sock is not None and not self._sock.closed:
            self._sock.close(0)

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def run_async(coro: Any) -> Any:
    """asyncio.run on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # asyncio.run has loop_factory only from 3.12
        return runner.run(coro)
