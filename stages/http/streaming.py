"""The ASGI response that runs one synthesis: it waits for the first audio (so that an
immediate error still gets its own HTTP status), then streams encoded audio as fragments
arrive, or, for non-streaming requests, sends the whole file with its length.

The client is watched the whole time: a disconnect, or a client that accepts no bytes
for `send_timeout_s`, cancels the request in the daemon (the client library cancels a
stream when its generator is closed) and frees the response's stream slot.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import numpy as np
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from voxpipe.stages.http.encoders import FORMATS, Encoder, available, make_encoder
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway, SpeechRequest, Synthesis

log = logging.getLogger("voxpipe.http")

ErrorRenderer = Callable[[HttpError], Response]


class ClientTooSlow(Exception):
    """The client did not accept the next bytes within the send timeout."""


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class AudioResponse:
    def __init__(self, gateway: Gateway, request: SpeechRequest, fmt: str, render_error: ErrorRenderer, *,
                 streaming: bool = True, out_rate: int | None = None, headers: dict[str, str] | None = None) -> None:
        self.gateway, self.request, self.fmt = gateway, request, fmt
        self.render_error = render_error
        self.streaming = streaming
        self.out_rate = out_rate
        self.headers = dict(headers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.create_task(self._run(scope, receive, send))
        watch = asyncio.create_task(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)
        if work in done:
            work.result()  # a bug in the handler should surface, not vanish

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            synthesis = await self.gateway.open(self.request)
        except HttpError as err:
            await self.render_error(err)(scope, receive, send)
            return
        try:
            if self.streaming:
                await self._stream(synthesis, send)
            else:
                await self._whole(synthesis, scope, receive, send)
        except HttpError as err:
            # Headers are out: all that is left is to end the connection without a
            # proper end of stream, which clients see as a failed download.
            log.warning("request for voice %r failed mid-stream: %s: %s", self.request.voice, err.code, err.message)
        except ClientTooSlow:
            log.warning("dropped a client that accepted no audio for %.0f s", self.gateway.limits.send_timeout_s)
        finally:
            await synthesis.aclose()

    def _encoder(self, sample_rate: int, total_samples: int | None = None) -> Encoder:
        return make_encoder(self.fmt, sample_rate, out_rate=self.out_rate, total_samples=total_samples)

    async def _encode(self, fn: Callable[..., bytes], *args: Any) -> bytes:
        if FORMATS[self.fmt].backend == "builtin":
            return fn(*args)
        return await asyncio.to_thread(fn, *args)  # codecs take milliseconds per fragment: off the loop

    def _start(self, status: int, encoder: Encoder, extra: dict[str, str]) -> dict[str, Any]:
        headers = {"content-type": encoder.content_type, "x-voxpipe-sample-rate": str(encoder.sample_rate),
                   "cache-control": "no-store", **{k.lower(): v for k, v in self.headers.items()}, **extra}
        return {"type": "http.response.start", "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]}

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(send(message), self.gateway.limits.send_timeout_s)
        except asyncio.TimeoutError:
            raise ClientTooSlow() from None

    async def _stream(self, synthesis: Synthesis, send: Send) -> None:
        encoder = self._encoder(synthesis.sample_rate)
        await self._send(send, self._start(200, encoder, {}))
        async for samples in synthesis:
            data = await self._encode(encoder.feed, samples)
            if data:
                await self._send(send, {"type": "http.response.body", "body": data, "more_body": True})
        data = await self._encode(encoder.finish)
        await self._send(send, {"type": "http.response.body", "body": data, "more_body": False})

    async def _whole(self, synthesis: Synthesis, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            parts = [samples async for samples in synthesis]
        except HttpError as err:  # nothing is sent yet: the failure gets its own status and body
            await self.render_error(err)(scope, receive, send)
            return
        samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        encoder = self._encoder(synthesis.sample_rate, total_samples=len(samples))
        body = await self._encode(lambda: encoder.feed(samples) + encoder.finish())
        timings = synthesis.result.timings if synthesis.result else {}
        extra = {"content-length": str(len(body))}
        extra.update({f"x-voxpipe-{k.replace('_', '-')}": f"{v:.4f}" for k, v in timings.items()
                      if k in ("first_audio_s", "total_s")})
        await self._send(send, self._start(200, encoder, extra))
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": False})


def check_format(fmt: str, reason: str = "") -> None:
    """Raise an honest 400 for a format this installation cannot produce."""
    why = available().get(fmt)
    if why is None:
        raise HttpError("unsupported_format", f"unknown audio format {fmt!r}{reason}")
    if why:
        raise HttpError("unsupported_format", f"audio format {fmt!r} cannot be produced here ({why})")
