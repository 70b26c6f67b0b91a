"""Reading request parameters: a size-limited JSON body, and typed values from JSON or
query strings, each failure an HttpError that names the parameter."""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request

from voxpipe.stages.families.options import OptionSpec
from voxpipe.stages.http.errors import HttpError

# The pipeline's own per-request options that both APIs accept as extra fields; the model
# families' options come from their declarations (request_option_specs).
CLIP_FIELD = "ref_audio_base64"  # an uploaded reference clip: its own limit (http.max_reference_kib)
PIPELINE_PARAMS: dict[str, type] = {"seed": int, "policy": str, "first_chunk": bool}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError("body_too_large", f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise HttpError("body_too_large", f"request body exceeds the limit of {limit} bytes")
    except ClientDisconnect:
        raise HttpError("bad_request", "the client went away while sending the body") from None
    return bytes(body)


async def read_json(request: Request, limit: int, clip_limit: int = 0) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes, besides a `ref_audio_base64` clip of at
    most `clip_limit` bytes (base64 takes 4 characters per 3 bytes)."""
    allowance = -(-clip_limit // 3) * 4 + 16 if clip_limit else 0
    body = await read_body(request, limit + allowance)
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError("bad_request", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpError("bad_request", "the request body must be a JSON object")
    clip = value.get(CLIP_FIELD)
    rest = len(body) - (len(clip) if isinstance(clip, str) else 0)
    if rest > limit:
        raise HttpError("body_too_large", f"request body exceeds the limit of {limit} bytes"
                                          + (f" (besides {CLIP_FIELD})" if clip_limit else ""))
    return value


def as_float(value: Any, name: str, low: float, high: float) -> float:
    """A number from JSON or a query string, inside [low, high]."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise HttpError("bad_option", f"'{name}' must be a number, got {value!r}", param=name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HttpError("bad_option", f"'{name}' must be a number, got {value!r}", param=name)
    if not low <= value <= high:
        raise HttpError("bad_option", f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return float(value)


def as_int(value: Any, name: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError("bad_option", f"'{name}' must be an integer, got {value!r}", param=name)
    return value


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise HttpError("bad_option", f"'{name}' must be true or false, got {value!r}", param=name)


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise HttpError("bad_option", f"'{name}' must be a string, got {value!r}", param=name)
    return value


def request_option_specs() -> dict[str, OptionSpec]:
    """Every per-request option the HTTP routes accept as an extra field (e.g. the OpenAI
    SDK's `extra_body={"noise_scale": 0}`): the pipeline's own, then each option some
    model family declares (stages/families/*/options.py), by name."""
    from voxpipe.stages import families

    specs = {name: OptionSpec(name, kind) for name, kind in PIPELINE_PARAMS.items()}
    for name, (spec, _) in families.declared_options().items():
        specs.setdefault(name, spec)
    return specs


def request_options(params: dict[str, Any], skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The declared options present in `params` (JSON values or query-string text), typed
    and checked against their declared range or choices; the voice's family checks again
    (which options it takes: a Piper option for a GPT-SoVITS voice is `bad_option`)."""
    out: dict[str, Any] = {}
    for name, spec in request_option_specs().items():
        value = params.get(name)
        if name in skip or value is None or value == "":
            continue
        if spec.kind is float:
            low = -math.inf if spec.low is None else spec.low
            out[name] = as_float(value, name, low, math.inf if spec.high is None else spec.high)
        elif spec.kind is int:
            out[name] = as_int(value, name)
            if spec.low is not None and out[name] < spec.low or spec.high is not None and out[name] > spec.high:
                raise HttpError("bad_option", f"'{name}' must be between {spec.low} and {spec.high}, got "
                                              f"{out[name]}", param=name)
        elif spec.kind is bool:
            out[name] = as_bool(value, name)
        else:
            out[name] = as_str(value, name)
            if spec.choices is not None and out[name] not in spec.choices:
                raise HttpError("bad_option", f"'{name}' must be one of {', '.join(spec.choices)}, got "
                                              f"{out[name]!r}", param=name)
    return out


def base64_clip(value: Any, name: str, limit: int) -> bytes:
    """A reference clip sent as base64 text (`ref_audio_base64`), at most `limit` bytes."""
    if not isinstance(value, str) or not value:
        raise HttpError("bad_reference", f"'{name}' must be the clip file's bytes as base64 text", param=name)
    if value.startswith("data:") and "," in value[:200]:  # a data URL: its header names the type, the rest is the clip
        value = value.split(",", 1)[1]
    if len(value) > -(-limit // 3) * 4 + 4:
        raise HttpError("bad_reference", f"'{name}' holds more than {limit // 1024} KiB; the limit is "
                                         f"{limit // 1024} KiB (http.max_reference_kib)", param=name)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError("bad_reference", f"'{name}' is not valid base64", param=name) from None
    if len(data) > limit:
        raise HttpError("bad_reference", f"'{name}' is {len(data) // 1024} KiB; the limit is {limit // 1024} KiB "
                                         f"(http.max_reference_kib)", param=name)
    return data


def family_option_names(family: str) -> set[str]:
    """The request options a model family declares (stages/families/*/family.py)."""
    from voxpipe.stages import families

    try:
        return {spec.name for spec in families.options_of(family)}
    except families.FamilyError:
        return set()


def families_other_than(family: str) -> list[str]:
    from voxpipe.stages import families

    return [name for name in families.names() if name != family]
