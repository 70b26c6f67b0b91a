"""Captioned speech: POST /v1/audio/captioned_speech, audio with each word's timing.

The body is /v1/audio/speech's (model, input, voice, response_format, speed, voxpipe's
options) plus `stream`. Whole (the default): one JSON object with the encoded audio in
base64 and every word. Streamed: newline-delimited JSON, one event per piece of audio as
it is made, with the words that end inside it, then a last event with `done` and totals.
Decoded and joined in order, the events' audio is one file of the requested format.
Times are seconds of the response's audio; words are the normalized text's.
"""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, AsyncIterator

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voxpipe.ipc.exchange import Word
from voxpipe.stages.http.encoders import FORMATS, make_encoder
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway, Synthesis
from voxpipe.stages.http.openai_routes import openai_error, parse_speech
from voxpipe.stages.http.params import read_json

DEFAULT_FORMAT = "wav"


def word_rows(words: list[Word]) -> list[dict[str, Any]]:
    return [{"word": w.text, "start": round(w.start, 4), "end": round(w.end, 4)} for w in words]


async def _encode(fmt: str, fn: Any, *args: Any) -> bytes:
    if FORMATS[fmt].backend == "builtin":
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def captioned_speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        body = await read_json(request, gateway.limits.max_body_bytes)
        stream = body.pop("stream", False)
        if not isinstance(stream, bool):
            raise HttpError("bad_option", "'stream' must be true or false", param="stream")
        body.setdefault("response_format", DEFAULT_FORMAT)
        speech, fmt, _ = parse_speech(body, gateway)
        synthesis = await gateway.open(speech)
    except HttpError as err:
        return openai_error(err)
    if stream:
        return StreamingResponse(_events(synthesis, fmt), media_type="application/x-ndjson",
                                 headers={"cache-control": "no-store"})
    try:
        return JSONResponse(await _whole(synthesis, fmt))
    except HttpError as err:
        return openai_error(err)
    finally:
        await synthesis.aclose()


async def _whole(synthesis: Synthesis, fmt: str) -> dict[str, Any]:
    parts = [samples async for samples in synthesis]
    samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    encoder = make_encoder(fmt, synthesis.sample_rate, total_samples=len(samples))
    audio = await _encode(fmt, lambda: encoder.feed(samples) + encoder.finish())
    return {"audio": _b64(audio), "audio_format": fmt, "sample_rate": synthesis.sample_rate,
            "duration": round(len(samples) / synthesis.sample_rate, 4), "words": word_rows(synthesis.words)}


async def _events(synthesis: Synthesis, fmt: str) -> AsyncIterator[bytes]:
    """One JSON line per fragment; an error after the first audio ends the stream with an
    `error` event (the status line is long gone)."""
    encoder = make_encoder(fmt, synthesis.sample_rate)
    samples_out, sent = 0, 0
    try:
        async for samples in synthesis:
            samples_out += len(samples)
            data = await _encode(fmt, encoder.feed, samples)
            words, sent = synthesis.words[sent:], len(synthesis.words)
            yield _line({"audio": _b64(data), "words": word_rows(words)})
        tail = await _encode(fmt, encoder.finish)
        words = synthesis.words[sent:]
        yield _line({"done": True, "audio": _b64(tail), "words": word_rows(words), "audio_format": fmt,
                     "sample_rate": synthesis.sample_rate, "duration": round(samples_out / synthesis.sample_rate, 4)})
    except HttpError as err:
        yield _line({"error": err.openai_body()["error"]})
    finally:
        await synthesis.aclose()


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


routes = [Route("/v1/audio/captioned_speech", captioned_speech, methods=["POST"])]
