"""The client library: a sync `Client` and an asyncio `AsyncClient`.

Both keep one socket per client object (never one per request), check the protocol
version when they connect, and offer `synthesize(...)` (the whole audio) and
`stream(...)` (fragments as they arrive). Errors come back as `VoxpipeError` with the
daemon's typed code. What a request's messages mean (fragments, resends after a frontend
restart, the end) is decided in one place, `exchange.RequestExchange`; this module only
moves messages between it and a socket.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

import zmq

from voxpipe.ipc import codec, sockets
from voxpipe.ipc.errors import ProtocolError, VoxpipeError
from voxpipe.ipc.exchange import Audio, AudioFragment, RequestExchange, Word, collect
from voxpipe.ipc.liveness import DaemonLiveness
from voxpipe.ipc.security import SecurityError, needs_curve, secure_client
from voxpipe.ipc.messages import (PROTOCOL_VERSION, Cancel, Error, Hello, Ping, Pong, Reference, Result,
                                  StatusQuery, StatusReply, SynthesisOptions, SynthesisRequest, TimelineEvent, Welcome,
                                  synthesis_options)

# numpy, asyncio and zmq.asyncio load where they are used: the sync client's first request
# goes out before numpy loads, and it never loads asyncio (`voxpipe say` starts faster).
if TYPE_CHECKING:
    import asyncio

    import numpy as np
    import zmq.asyncio

DEFAULT_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5.0
PROBE_S = 1.0  # while waiting, ping after this much silence to learn of a frontend restart
# A request whose daemon has said nothing for this long (not even a pong to the probes
# above) fails `unavailable` instead of waiting out its timeout: the daemon is gone. It
# must outlast a frontend restart, whose successor answers the probes once it is up
# (measured 1.6-4.4 s on a loaded 2-core machine).
GONE_AFTER_S = 10.0
# On a local (ipc://) endpoint a silent daemon is looked at sooner: after a probe went
# unanswered, the endpoint lock tells a daemon that was killed or hangs (fail now) from
# one restarting its frontend (wait, up to gone_after). ipc/liveness.py
LOOK_AFTER_S = 2 * PROBE_S
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 1000, 3000  # ZeroMQ's own: drops a connection whose peer went silent

__all__ = ["Audio", "AudioFragment", "AsyncClient", "Client", "Reference", "SynthesisStream", "Word", "run_async"]


def _options(**kwargs: Any) -> SynthesisOptions:
    """The pipeline's options by name; the rest go to the voice's family, which checks
    them (an option it does not take: VoxpipeError `bad_option`). A `reference` whose
    clips are paths is sent with the files' bytes (read here, on the client's machine)."""
    reference = kwargs.get("reference")
    if reference is not None:
        kwargs["reference"] = _wire_reference(reference)
    return synthesis_options(**kwargs)


def _clip_bytes(clip: Any, what: str) -> bytes:
    if isinstance(clip, (bytes, bytearray, memoryview)):
        return bytes(clip)
    if isinstance(clip, (str, os.PathLike)):
        try:
            return Path(clip).read_bytes()
        except OSError as exc:
            raise VoxpipeError("bad_reference", f"cannot read the {what} {str(clip)!r}: {exc.strerror}") from None
    raise TypeError(f"the {what} must be a path or bytes, not {type(clip).__name__}")


def _wire_reference(reference: Any) -> Reference:
    """`Reference(audio=PATH_OR_BYTES, text=..., language=..., aux=[PATH_OR_BYTES, ...])`
    with every clip as bytes."""
    if not isinstance(reference, Reference):
        raise TypeError(f"reference must be a voxpipe Reference, not {type(reference).__name__}")
    return Reference(_clip_bytes(reference.audio, "reference clip"), reference.text, reference.language,
                     [_clip_bytes(a, "auxiliary reference clip") for a in reference.aux])


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


def _client_socket(ctx: zmq.Context) -> zmq.Socket:
    sock = sockets.make_socket(ctx, zmq.DEALER)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    return sock


def _gone(exchange: RequestExchange, last_heard: float, gone_after: float,
          liveness: DaemonLiveness) -> VoxpipeError | None:
    """The error for a request whose daemon is gone (its lock says so after a silent
    probe, or it has been silent too long), else None."""
    silent = time.monotonic() - max(last_heard, exchange.started)
    if silent < min(LOOK_AFTER_S, gone_after):
        return None
    why = liveness.gone()
    if why is not None:
        return VoxpipeError("unavailable", f"the daemon is gone: {why}", exchange.request_id)
    if silent < gone_after:
        return None
    return VoxpipeError("unavailable", f"the daemon stopped answering (nothing for {silent:.1f} s); "
                                      "it may have stopped", exchange.request_id)


def _decode_reply(frames: list[bytes]) -> tuple[Any, bytes | None]:
    message = codec.decode(frames[0])
    return message, (frames[1] if len(frames) > 1 else None)


class SynthesisStream:
    """Iterate for fragments; `result` holds the final totals once iteration ends.
    Leaving early (break, close(), garbage collection) cancels the request."""

    def __init__(self, client: "Client", exchange: RequestExchange) -> None:
        self._client, self._exchange = client, exchange
        self.request_id = exchange.request_id
        self.result: Result | None = None

    @property
    def words(self) -> list[Word]:
        """Every word received so far (each fragment carries those that end inside it)."""
        return list(self._exchange.words)

    @property
    def timeline(self) -> list[TimelineEvent]:
        """With the `timeline` option: the request's steps in the daemon so far, and each
        fragment's arrival here (time.monotonic() seconds)."""
        return list(self._exchange.timeline)

    def __iter__(self) -> Iterator[AudioFragment]:
        try:
            for item in self._client._drive(self._exchange):
                if isinstance(item, Result):
                    self.result = item
                else:
                    yield item
        finally:
            self.close()

    def close(self) -> None:
        self._client._leave(self._exchange)

    def __enter__(self) -> "SynthesisStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A synchronous client; one request at a time per client object (use one client
    per thread, or AsyncClient for many requests over one socket)."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, curve_keys_dir: str | None = None,
                 gone_after: float = GONE_AFTER_S) -> None:
        self.endpoint = endpoint or sockets.default_endpoint()
        self.timeout = timeout
        self.gone_after = gone_after
        self._liveness = DaemonLiveness(self.endpoint)
        self._last_heard = 0.0  # time.monotonic() of the daemon's last message
        self._ctx = zmq.Context.instance()
        self._sock = _client_socket(self._ctx)
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
        """The next reply that names no request ('' ids: handshake, status, pong)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1):
                if unavailable:
                    self.close()
                    raise VoxpipeError("unavailable", f"no voxpipe daemon answered at {self.endpoint}")
                raise VoxpipeError("timeout", "no answer from the daemon in time", request_id or None)
            message, payload = self._recv()
            if getattr(message, "request_id", "") == request_id:
                return message, payload
            # else: a late message of an earlier request (cancelled, timed out): skip it

    def _recv(self) -> tuple[Any, bytes | None]:
        try:
            frames = self._sock.recv_multipart()
            self._last_heard = time.monotonic()
            return _decode_reply(frames)
        except ProtocolError as exc:
            raise VoxpipeError("bad_request", f"undecodable reply: {exc}") from None

    def _receive_for(self, exchange: RequestExchange) -> tuple[Any, bytes | None]:
        """The next message for a request, or a Pong. Silence is met with a ping: its
        pong tells the exchange whether the frontend that holds the request is still there."""
        while True:
            remaining = exchange.remaining()
            if remaining <= 0:
                raise exchange.timed_out()
            if not self._sock.poll(int(min(remaining, PROBE_S) * 1000) + 1):
                gone = _gone(exchange, self._last_heard, self.gone_after, self._liveness)
                if gone is not None:
                    raise gone
                try:
                    sockets.send(self._sock, Ping(0), flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # nobody to take it: the daemon is gone or restarting
                continue
            message, payload = self._recv()
            rid = getattr(message, "request_id", "")
            if isinstance(message, Pong) or rid == exchange.request_id or (isinstance(message, Error) and not rid):
                return message, payload

    def _start(self, text: str, voice: str, stream: bool, timeout: float | None, request_id: str | None,
               options: dict[str, Any]) -> RequestExchange:
        timeout = timeout or self.timeout
        exchange = RequestExchange(_request(text, voice, stream, timeout, request_id, options), self.incarnation,
                                   timeout)
        sockets.send(self._sock, exchange.start())
        return exchange

    def _drive(self, exchange: RequestExchange) -> Iterator[AudioFragment | Result]:
        """Carry one request's exchange over this socket: its fragments, then its Result.
        However it is left (end, error, timeout, the caller stopping), an unfinished
        request is cancelled."""
        try:
            while True:
                step = exchange.feed(*self._receive_for(exchange))
                self.incarnation = exchange.incarnation  # the next request goes to this frontend
                if isinstance(step, SynthesisRequest):
                    sockets.send(self._sock, step)
                elif step is not None:
                    yield step
                    if isinstance(step, Result):
                        return
        finally:
            self._leave(exchange)

    def _leave(self, exchange: RequestExchange) -> None:
        cancel = exchange.leave()
        if cancel is not None:
            self.cancel(cancel.request_id)

    def stream(self, text: str, voice: str = "joe", *, timeout: float | None = None, request_id: str | None = None,
               **options: Any) -> SynthesisStream:
        return SynthesisStream(self, self._start(text, voice, True, timeout, request_id, options))

    def synthesize(self, text: str, voice: str = "joe", *, timeout: float | None = None,
                   request_id: str | None = None, **options: Any) -> Audio:
        exchange = self._start(text, voice, False, timeout, request_id, options)
        fragments: list[AudioFragment] = []
        for item in self._drive(exchange):
            if isinstance(item, AudioFragment):
                fragments.append(item)
            else:
                return collect(exchange.request_id, fragments, item)
        raise VoxpipeError("internal", "the request ended without a result", exchange.request_id)

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
                 curve_keys_dir: str | None = None, on_sent: Callable[[str], None] | None = None,
                 gone_after: float = GONE_AFTER_S) -> None:
        self.endpoint = endpoint or sockets.default_endpoint()
        self.timeout = timeout
        self.gone_after = gone_after
        self._liveness = DaemonLiveness(self.endpoint)
        self._last_heard = 0.0  # time.monotonic() of the daemon's last message
        self._exchanges: dict[str, RequestExchange] = {}
        self._curve_keys_dir = curve_keys_dir
        self._on_sent = on_sent  # called with each request id once it is on the wire (for timing)
        import zmq.asyncio

        self._ctx = zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._queues: dict[str, asyncio.Queue[tuple[Any, bytes | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.welcome: Welcome | None = None

    async def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> "AsyncClient":
        import asyncio

        self._sock = _client_socket(self._ctx)  # type: ignore[assignment]
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
        import asyncio

        while True:
            await asyncio.sleep(PROBE_S)
            for rid, exchange in list(self._exchanges.items()):
                gone = _gone(exchange, self._last_heard, self.gone_after, self._liveness)
                queue = self._queues.get(rid)
                if gone is not None and queue is not None:
                    queue.put_nowait((Error(rid, gone.code, gone.message), None))
            if len(self._queues) > 1:
                try:
                    await self._sock.send_multipart([codec.encode(Ping(0))], flags=zmq.NOBLOCK)  # type: ignore[union-attr]
                except zmq.Again:
                    pass  # nobody to take it: the daemon is gone or restarting

    async def _send(self, message: Any) -> None:
        assert self._sock is not None, "call connect() first"
        await self._sock.send_multipart([codec.encode(message)])

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            self._last_heard = time.monotonic()
            try:
                message, payload = _decode_reply(frames)
            except ProtocolError:
                continue
            if isinstance(message, Pong) and message.nonce == 0:
                # Our keepalive: every waiting request's exchange checks it for a restart.
                if self.welcome and message.incarnation:
                    self.welcome.incarnation = message.incarnation  # where new requests go
                for rid, queue in self._queues.items():
                    if rid:
                        queue.put_nowait((message, None))
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
                return collect(request.request_id, fragments, item)
        raise VoxpipeError("internal", "the request ended without a result", request.request_id)

    async def _run(self, request: SynthesisRequest, timeout: float) -> AsyncIterator[AudioFragment | Result]:
        """Carry one request's exchange over the shared socket: its fragments, then its
        Result. However it is left, an unfinished request is cancelled."""
        import asyncio

        assert self.welcome is not None, "call connect() first"
        exchange = RequestExchange(request, self.welcome.incarnation, timeout)
        rid = exchange.request_id
        queue = self._queues[rid] = asyncio.Queue()
        self._exchanges[rid] = exchange
        try:
            await self._send(exchange.start())
            if self._on_sent is not None:
                self._on_sent(rid)
            while True:
                try:
                    message, payload = await asyncio.wait_for(queue.get(), max(0.0, exchange.remaining()))
                except asyncio.TimeoutError:
                    raise exchange.timed_out() from None
                step = exchange.feed(message, payload)
                if isinstance(step, SynthesisRequest):
                    await self._send(step)
                elif step is not None:
                    yield step
                    if isinstance(step, Result):
                        return
        finally:
            self._queues.pop(rid, None)
            self._exchanges.pop(rid, None)
            cancel = exchange.leave()
            if cancel is not None and self._sock is not None and not self._sock.closed:
                await self._send(cancel)

    async def status(self, timeout: float = 10.0) -> dict[str, Any]:
        import asyncio

        query_id = uuid.uuid4().hex
        await self._send(StatusQuery(query_id))
        queue = self._queues[""]
        deadline = time.monotonic() + timeout
        while True:
            message, _ = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            if isinstance(message, StatusReply) and message.query_id == query_id:
                return message.status

    async def close(self) -> None:
        import asyncio

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
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # asyncio.run has loop_factory only from 3.12
        return runner.run(coro)
