"""A drop-in for GPT-SoVITS api_v2 clients: `/tts`, GET (query string) and POST (JSON),
with its parameter names and its answers (audio with HTTP 200; failures as JSON with
HTTP 400).

What maps onto voxpipe: `text`; `ref_audio_path` names the voice (a voice known to the
daemon, by name, by a file inside the voices directory, or by the path of a GPT-SoVITS
voice's own reference clip; never any other path);
`text_split_method` cut0..cut5 (the frontend's cut policies of the same names);
`speed_factor` (length_scale = 1 / speed_factor); `seed` (-1: random); `media_type`
wav/raw/ogg/aac; `streaming_mode` (0/false: the whole file, with its length; 1/true,
2, 3: audio as it is made). Everything else GPT-SoVITS takes (the prompt text and
language, sampling settings, batching) has no meaning for a voxpipe voice: it is
accepted and named in the `X-Voxpipe-Ignored` response header. `text_lang` is checked
to be present, as GPT-SoVITS does, and reported there too: a voice speaks its own
language.

`/set_gpt_weights` and `/set_sovits_weights` succeed when `weights_path` is a known
GPT-SoVITS voice's own checkpoint and change nothing: each request's voice comes from its
`ref_audio_path`, so concurrent clients never switch weights under each other. Any other
path is a 400. `/control` (restart, exit) is refused: the supervisor owns the processes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway, SpeechRequest
from voxpipe.stages.families.gpt_sovits.http.files import voice_files, voice_of_file
from voxpipe.stages.http.params import VOXPIPE_OPTIONS, as_float, as_int, as_str, read_json, voxpipe_options
from voxpipe.stages.http.streaming import AudioResponse, check_format

MEDIA_TYPES = {"wav": "wav", "raw": "pcm", "ogg": "ogg", "aac": "aac"}  # GPT-SoVITS name -> our format
HONOURED = {"text", "ref_audio_path", "text_split_method", "speed_factor", "seed", "media_type", "streaming_mode",
            *VOXPIPE_OPTIONS}


def gsv_error(err: HttpError) -> Response:
    return JSONResponse(err.gsv_body(), status_code=400, headers=err.headers)


def resolve_voice(ref: str, voices: list[str], voices_dir: Path | None) -> str:
    """The voice `ref` names: a known voice's name, or a file inside the voices directory
    (its first directory there names the voice). Anything else is refused before the file
    system is asked about it."""
    if ref in voices:
        return ref
    if voices_dir is not None and ref and "\0" not in ref:
        base = voices_dir.resolve()
        candidate = Path(os.path.abspath(base / ref))  # lexical first: ".." cannot climb out
        if candidate.is_relative_to(base):
            try:
                real = candidate.resolve(strict=True)  # then symlinks cannot lead out either
            except (OSError, RuntimeError):
                real = None
            if real is not None and real != base and real.is_relative_to(base):
                name = real.relative_to(base).parts[0]
                if name in voices:
                    return name
    raise HttpError("bad_voice", f"ref_audio_path {ref!r} is neither a voice known to the daemon nor a file in "
                                 f"its voices directory; known voices: {', '.join(voices)}", param="ref_audio_path")


async def _ref_voice(ref: str, gateway: Gateway, voices_dir: Path | None) -> str:
    """resolve_voice, or else the voice whose own reference clip `ref` is (it may lie
    outside the voices directory, where voice.toml names it)."""
    voices = await gateway.voices()
    try:
        return resolve_voice(ref, voices, voices_dir)
    except HttpError:
        voice = voice_of_file(ref, "reference", voice_files(voices_dir, voices), voices_dir)
        if voice is None:
            raise
        return voice


def _streaming(value: Any) -> bool:
    """GPT-SoVITS's streaming_mode: false/0 whole file; true/1, 2, 3 streamed."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("false", "0"):
        return False
    if text in ("true", "1", "2", "3"):
        return True
    raise HttpError("bad_option", "the value of streaming_mode must be 0, 1, 2, 3 or true/false",
                    param="streaming_mode")


async def parse_tts(params: dict[str, Any], gateway: Gateway, voices_dir: Path | None
                    ) -> tuple[SpeechRequest, str, bool, list[str]]:
    """(request, media_type, streaming, parameters accepted but not honoured)."""
    ref = params.get("ref_audio_path")
    if ref in (None, ""):
        raise HttpError("bad_voice", "ref_audio_path is required", param="ref_audio_path")
    text = gateway.check_text(params.get("text"), "text")
    if params.get("text_lang") in (None, ""):
        raise HttpError("bad_request", "text_lang is required", param="text_lang")
    media_type = as_str(params.get("media_type", "wav"), "media_type")
    if media_type not in MEDIA_TYPES:
        raise HttpError("unsupported_format", f"media_type: {media_type} is not supported; "
                                              f"choose one of {', '.join(MEDIA_TYPES)}")
    check_format(MEDIA_TYPES[media_type])
    streaming = _streaming(params.get("streaming_mode", False))
    voice = await _ref_voice(as_str(ref, "ref_audio_path"), gateway, voices_dir)
    options = voxpipe_options({k: v for k, v in params.items() if k != "seed"})  # GPT-SoVITS's seed: below
    if params.get("text_split_method") not in (None, ""):
        options["policy"] = as_str(params["text_split_method"], "text_split_method")
    speed = as_float(params.get("speed_factor", 1.0), "speed_factor", 0.2, 10.0)
    if speed != 1.0:
        options["length_scale"] = 1.0 / speed
    if params.get("seed") not in (None, ""):
        seed = as_int(params["seed"], "seed")
        if seed >= 0:
            options["seed"] = seed
    ignored = sorted(k for k in params if k not in HONOURED)
    return SpeechRequest(text, voice, options), media_type, streaming, ignored


async def tts(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        if request.method == "POST":
            params = await read_json(request, gateway.limits.max_body_bytes)
        else:
            params = dict(request.query_params)
        speech, media_type, streaming, ignored = await parse_tts(params, gateway, request.app.state.voices_dir)
    except HttpError as err:
        return gsv_error(err)
    headers = {"Content-Type": f"audio/{media_type}", "X-Voxpipe-Seed": str(speech.settle_seed())}
    if ignored:
        headers["X-Voxpipe-Ignored"] = ",".join(ignored)
    return AudioResponse(gateway, speech, MEDIA_TYPES[media_type], gsv_error, streaming=streaming,  # type: ignore[return-value]
                         headers=headers)


async def _set_weights(request: Request, kind: str) -> Response:
    """api_v2's model switch: a check that the path is a known voice's own checkpoint."""
    gateway: Gateway = request.app.state.gateway
    voices_dir: Path | None = request.app.state.voices_dir
    path = request.query_params.get("weights_path", "")
    try:
        if not path:
            raise HttpError("bad_request", "weights_path is required", param="weights_path")
        files = voice_files(voices_dir, await gateway.voices())
        voice = voice_of_file(path, kind, files, voices_dir)
        if voice is None:
            known = ", ".join(sorted(files)) or "none"
            raise HttpError("bad_voice", f"weights_path {path!r} is not the {kind.upper()} checkpoint of a voice "
                                         f"known to the daemon (GPT-SoVITS voices: {known}); voxpipe loads no "
                                         f"other weights", param="weights_path")
    except HttpError as err:
        return gsv_error(err)
    return JSONResponse({"message": "success", "voice": voice,
                         "note": f"no switch is needed: pass ref_audio_path={voice!r} (or its reference clip) "
                                 f"to /tts"})


async def set_gpt_weights(request: Request) -> Response:
    return await _set_weights(request, "gpt")


async def set_sovits_weights(request: Request) -> Response:
    return await _set_weights(request, "sovits")


async def control(request: Request) -> Response:
    return gsv_error(HttpError("not_supported", "/control is not available: the daemon's supervisor owns its "
                                                "processes; restart or stop the service instead (for example "
                                                "systemctl restart voxpipe)", param="command"))


routes = [Route("/tts", tts, methods=["GET", "POST"]),
          Route("/set_gpt_weights", set_gpt_weights, methods=["GET"]),
          Route("/set_sovits_weights", set_sovits_weights, methods=["GET"]),
          Route("/control", control, methods=["GET", "POST"])]
