"""The OpenAI-compatible speech API: POST /v1/audio/speech, GET /v1/models and
GET /v1/audio/voices, with errors in OpenAI's `{"error": {...}}` shape. OpenAI's own voice
names (`alloy`, ...) speak through the configured `http.voice_aliases`."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxpipe.stages.http.encoders import can_resample
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway, SpeechRequest
from voxpipe.ipc.messages import Reference
from voxpipe.stages.http.params import as_float, as_str, base64_clip, read_json, request_option_specs, request_options
from voxpipe.stages.http.streaming import AudioResponse, check_format

# Every model id runs the same pipeline; OpenAI's names are accepted so that existing
# clients work unchanged.
MODELS = ("voxpipe", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
PCM_RATE = 24_000  # OpenAI's pcm is 24 kHz s16le; resampled to it where PyAV is installed
# A GPT-SoVITS voice may speak from a clip the request uploads: extra fields named as api_v2's.
REFERENCE_FIELDS = ("ref_audio_base64", "prompt_text", "prompt_lang")
OWN_FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", *REFERENCE_FIELDS}


def openai_error(err: HttpError) -> Response:
    return JSONResponse(err.openai_body(), status_code=err.status, headers=err.headers)


def _voice(value: Any) -> str:
    if isinstance(value, dict):  # newer SDKs may send {"id": "..."} for custom voices
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise HttpError("bad_voice", "'voice' is required: the name of a voice (see GET /v1/audio/voices)")
    return value


def parse_speech(body: dict[str, Any], gateway: Gateway) -> tuple[SpeechRequest, str, list[str]]:
    """(request, response format, fields accepted but not honoured)."""
    model = body.get("model", MODELS[0])
    if not isinstance(model, str) or model not in MODELS:
        raise HttpError("model_not_found", f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    text = gateway.check_text(body.get("input"), "input")
    voice = _voice(body.get("voice"))
    fmt = as_str(body.get("response_format", "mp3"), "response_format")
    if fmt not in FORMATS:
        raise HttpError("unsupported_format", f"response_format {fmt!r} is not one of {', '.join(FORMATS)}")
    check_format(fmt)
    if body.get("stream_format", "audio") != "audio":
        raise HttpError("bad_option", "only stream_format 'audio' is supported", param="stream_format")
    options = request_options(body)
    if body.get("ref_audio_base64") not in (None, ""):
        options["reference"] = Reference(base64_clip(body["ref_audio_base64"], "ref_audio_base64",
                                                     gateway.limits.max_reference_bytes),
                                         as_str(body.get("prompt_text") or "", "prompt_text"),
                                         as_str(body.get("prompt_lang") or "", "prompt_lang"))
    speed = as_float(body.get("speed", 1.0), "speed", 0.25, 4.0)
    if speed != 1.0:
        options["length_scale"] = 1.0 / speed
    known = OWN_FIELDS | set(request_option_specs())
    ignored = sorted(k for k in body if k not in known)  # e.g. "instructions"
    return SpeechRequest(text, voice, options), fmt, ignored


async def speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        body = await read_json(request, gateway.limits.max_body_bytes, gateway.limits.max_reference_bytes)
        speech_request, fmt, ignored = parse_speech(body, gateway)
        speech_request.voice = await gateway.resolve_alias(speech_request.voice)
    except HttpError as err:
        return openai_error(err)
    headers = {"X-Voxpipe-Voice": speech_request.voice, "X-Voxpipe-Seed": str(speech_request.settle_seed())}
    if ignored:
        headers["X-Voxpipe-Ignored"] = ",".join(ignored)
    out_rate = PCM_RATE if fmt == "pcm" and can_resample() else None
    return AudioResponse(gateway, speech_request, fmt, openai_error, out_rate=out_rate, headers=headers)  # type: ignore[return-value]


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "voxpipe"}


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model(m) for m in MODELS]})


async def model(request: Request) -> Response:
    model_id = request.path_params["model"]
    if model_id not in MODELS:
        return openai_error(HttpError("model_not_found", f"unknown model {model_id!r}", status=404))
    return JSONResponse(_model(model_id))


async def voices(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        status = await gateway.status()
    except HttpError as err:
        return openai_error(err)
    names = status.get("voices", [])
    data = [{"id": name, "object": "voice", "name": name} for name in names]
    aliases = {alias: voice for alias, voice in gateway.voice_aliases.items() if alias not in names}
    return JSONResponse({"object": "list", "data": data, "aliases": aliases,
                         "unavailable": status.get("unavailable_voices", {})})


routes = [
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model}", model, methods=["GET"]),
    Route("/v1/audio/voices", voices, methods=["GET"]),
]
