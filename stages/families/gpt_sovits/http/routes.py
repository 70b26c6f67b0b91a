"""A drop-in for GPT-SoVITS api_v2 clients: `/tts`, GET (query string) and POST (JSON),
with its parameter names and its answers (audio with HTTP 200; failures as JSON with
HTTP 400). docs/gpt-sovits.md lists what each parameter does here.

`ref_audio_path` picks the voice and the reference clip:
- a voice's name, or its own reference clip (where voice.toml names it): that voice,
  speaking from its own prompt;
- any other file under `VOICES_DIR/NAME/`: voice NAME speaking from that clip (a
  GPT-SoVITS voice; for other voices the file only names the voice);
- a file under one of `http.reference_dirs`: the voice `/set_gpt_weights` and
  `/set_sovits_weights` last selected (for every client of the gateway, as api_v2's model
  switch is global), else `http.gsv_default_voice`;
- anything else is refused (400) before the file system is asked about it; `..` and
  symbolic links cannot lead out of those directories.
A clip comes with its transcript (`prompt_text`) and language (`prompt_lang`);
`aux_ref_audio_paths` (same rules) lend their timbre; `ref_audio_base64` uploads a clip
instead of naming one. `/set_refer_audio` sets the clip that requests without a
`ref_audio_path` use, under the same rules. `/control` (restart, exit) is refused: the
supervisor owns the processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxpipe.ipc.messages import Reference
from voxpipe.stages.families.gpt_sovits.http.files import allowed_clip, voice_files, voice_of_file
from voxpipe.stages.families.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway, SpeechRequest
from voxpipe.stages.http.params import (as_bool, as_float, as_int, as_str, base64_clip, families_other_than,
                                        family_option_names, read_json, request_option_specs, request_options)
from voxpipe.stages.http.streaming import AudioResponse, check_format

MEDIA_TYPES = {"wav": "wav", "raw": "pcm", "ogg": "ogg", "aac": "aac"}  # GPT-SoVITS name -> our format
# Handled here rather than as a declared option (the declared ones: request_option_specs).
OWN_PARAMS = {"text", "text_lang", "ref_audio_path", "ref_audio_base64", "prompt_text", "prompt_lang",
              "aux_ref_audio_paths", "text_split_method", "speed_factor", "seed", "media_type", "streaming_mode",
              "super_sampling"}
# api_v2's knobs for its own batching and stream cutting: the daemon batches across
# requests and windows its audio itself; accepted and named in X-Voxpipe-Ignored.
TEXT_LANG = "text_lang"  # api_v2's; honoured where the voice's family declares an option of that name


@dataclass
class GsvHttpState:
    """What api_v2's global calls set, for every client of this gateway."""

    selected_voice: str | None = None  # /set_gpt_weights, /set_sovits_weights
    refer_audio: str | None = None  # /set_refer_audio: the clip of requests without ref_audio_path


def _state(request: Request) -> GsvHttpState:
    state = getattr(request.app.state, "gsv", None)
    if state is None:
        state = request.app.state.gsv = GsvHttpState()
    return state


def gsv_error(err: HttpError) -> Response:
    return JSONResponse(err.gsv_body(), status_code=400, headers=err.headers)


def resolve_voice(ref: str, voices: list[str], voices_dir: Path | None) -> str:
    """The voice `ref` names: a known voice's name, or a file inside the voices directory
    (its first directory there names the voice). Anything else is refused before the file
    system is asked about it."""
    if ref in voices:
        return ref
    found = allowed_clip(ref, voices_dir, [])
    if found is not None:
        name = found[0].relative_to(found[1]).parts[0]
        if name in voices:
            return name
    raise HttpError("bad_voice", f"ref_audio_path {ref!r} is neither a voice known to the daemon nor a file in "
                                 f"its voices directory; known voices: {', '.join(voices)}", param="ref_audio_path")


@dataclass
class RefChoice:
    """What `ref_audio_path` chose: the voice (None: the selected or default voice) and
    the clip it speaks from (None: the voice's own prompt)."""

    voice: str | None
    clip: Path | None = None


async def choose_ref(ref: str, request: Request, param: str = "ref_audio_path") -> RefChoice:
    """`ref_audio_path` by the rules in the module docstring."""
    gateway: Gateway = request.app.state.gateway
    voices_dir: Path | None = request.app.state.voices_dir
    voices = await gateway.voices()
    if ref in voices:
        return RefChoice(ref)
    gsv_voices = voice_files(voices_dir, voices)
    own = voice_of_file(ref, "reference", gsv_voices, voices_dir)
    if own is not None:
        return RefChoice(own)
    found = allowed_clip(ref, voices_dir, request.app.state.reference_dirs)
    if found is not None:
        real, base = found
        if voices_dir is not None and base == voices_dir.resolve():
            name = real.relative_to(base).parts[0]
            if name in gsv_voices:
                return RefChoice(name, real)
            if name in voices:
                return RefChoice(name)  # another family's voice: the file only names it
        else:
            return RefChoice(None, real)
    dirs = ", ".join(str(d) for d in request.app.state.reference_dirs) or "none"
    raise HttpError("bad_voice", f"{param} {ref!r} is not a voice known to the daemon nor a file in its voices "
                                 f"directory or in http.reference_dirs ({dirs}); known voices: {', '.join(voices)}",
                    param=param)


def read_clip(path: Path, param: str, limit: int) -> bytes:
    """A clip file's bytes, refused before reading when it is larger than `limit`."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise HttpError("bad_reference", f"{param}: the clip is {size // 1024} KiB; the limit is "
                                             f"{limit // 1024} KiB (http.max_reference_kib)", param=param)
        return path.read_bytes()
    except OSError as exc:
        raise HttpError("bad_reference", f"{param}: cannot read the clip ({exc.strerror})", param=param) from None


def _own_prompt(voice: str, voices_dir: Path | None) -> tuple[Path, str, str] | None:
    """A GPT-SoVITS voice's own clip, transcript and language."""
    if voices_dir is None:
        return None
    try:
        config = read_voice_toml(voices_dir / voice)
    except VoiceConfigError:
        return None
    return config.reference.audio, config.reference.text, config.reference.language


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


def _aux_paths(value: Any) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):  # a query string: one path, or several separated by commas
        return [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError("bad_option", "aux_ref_audio_paths must be a list of paths", param="aux_ref_audio_paths")
    return [v for v in value if v]


async def _reference(params: dict[str, Any], request: Request) -> tuple[str, Reference | None]:
    """(voice, the request's own reference or None) from the reference parameters."""
    gateway: Gateway = request.app.state.gateway
    limit = gateway.limits.max_reference_bytes
    ref = params.get("ref_audio_path") or _state(request).refer_audio
    upload = params.get("ref_audio_base64")
    if ref in (None, "") and upload in (None, ""):
        raise HttpError("bad_voice", "ref_audio_path (or ref_audio_base64) is required", param="ref_audio_path")
    choice = await choose_ref(as_str(ref, "ref_audio_path"), request) if ref not in (None, "") else RefChoice(None)
    audio: bytes | None = None
    if upload not in (None, ""):
        audio = base64_clip(upload, "ref_audio_base64", limit)
    elif choice.clip is not None:
        audio = read_clip(choice.clip, "ref_audio_path", limit)
    voice = choice.voice or _state(request).selected_voice or request.app.state.gsv_default_voice
    if not voice:
        raise HttpError("bad_voice", "no voice speaks this clip: select one with /set_gpt_weights and "
                                     "/set_sovits_weights, or set http.gsv_default_voice", param="ref_audio_path")
    prompt_text = as_str(params.get("prompt_text") or "", "prompt_text")
    prompt_lang = as_str(params.get("prompt_lang") or "", "prompt_lang")
    aux = []
    for path in _aux_paths(params.get("aux_ref_audio_paths")):
        found = await choose_ref(path, request, "aux_ref_audio_paths")
        clip = found.clip if found.clip is not None else None
        if clip is None:
            own = _own_prompt(found.voice or "", request.app.state.voices_dir)
            clip = own[0] if own else None
        if clip is None:
            raise HttpError("bad_voice", f"aux_ref_audio_paths: {path!r} is not a clip", param="aux_ref_audio_paths")
        aux.append(read_clip(clip, "aux_ref_audio_paths", limit))
    if audio is None and aux:  # the voice's own clip, with other clips' timbre fused in
        own = _own_prompt(voice, request.app.state.voices_dir)
        if own is None:
            raise HttpError("bad_option", f"aux_ref_audio_paths: voice {voice!r} takes no reference clips",
                            param="aux_ref_audio_paths")
        audio = read_clip(own[0], "ref_audio_path", limit)
        prompt_text, prompt_lang = prompt_text or own[1], prompt_lang or own[2]
    if audio is None:
        return voice, None
    if not prompt_text.strip():
        raise HttpError("bad_option", "prompt_text is required with a reference clip other than a voice's own: "
                                      "what the clip says", param="prompt_text")
    return voice, Reference(audio, prompt_text, prompt_lang, aux)


async def parse_tts(params: dict[str, Any], request: Request) -> tuple[SpeechRequest, str, bool, list[str]]:
    """(request, media_type, streaming, parameters accepted but not honoured)."""
    gateway: Gateway = request.app.state.gateway
    text = gateway.check_text(params.get("text"), "text")
    if params.get("text_lang") in (None, ""):
        raise HttpError("bad_request", "text_lang is required", param="text_lang")
    media_type = as_str(params.get("media_type", "wav"), "media_type")
    if media_type not in MEDIA_TYPES:
        raise HttpError("unsupported_format", f"media_type: {media_type} is not supported; "
                                              f"choose one of {', '.join(MEDIA_TYPES)}")
    check_format(MEDIA_TYPES[media_type])
    streaming = _streaming(params.get("streaming_mode", False))
    voice, reference = await _reference(params, request)
    options = request_options(params, skip={"seed"})  # GPT-SoVITS's seed (-1: random): below
    if params.get("super_sampling") not in (None, "") and as_bool(params["super_sampling"], "super_sampling"):
        raise HttpError("bad_option", "super_sampling (audio super-resolution for v3 voices) is not available: "
                                      "voxpipe has no super-resolution model; leave it false", param="super_sampling")
    ignored: set[str] = set()
    if reference is not None:
        options["reference"] = reference
    else:  # the voice speaks from its own prompt: a transcript alone has nothing to say
        ignored |= {k for k in ("prompt_text", "prompt_lang") if k in params}
    gsv_voice = voice in voice_files(request.app.state.voices_dir, [voice])
    if not gsv_voice:  # another family's voice: api_v2's GPT-SoVITS settings do not apply to it
        others = {n for name in families_other_than("gpt-sovits") for n in family_option_names(name)}
        ignored |= {k for k in options if k in family_option_names("gpt-sovits") and k not in others}
        options = {k: v for k, v in options.items() if k not in ignored}
    if TEXT_LANG in family_option_names("gpt-sovits") and gsv_voice:
        options[TEXT_LANG] = as_str(params[TEXT_LANG], TEXT_LANG)
    else:
        ignored.add(TEXT_LANG)  # checked above as api_v2 does; the voice reads its own language
    if params.get("text_split_method") not in (None, ""):
        options["policy"] = as_str(params["text_split_method"], "text_split_method")
    speed = as_float(params.get("speed_factor", 1.0), "speed_factor", 0.2, 10.0)
    if speed != 1.0:
        options["length_scale"] = 1.0 / speed
    if params.get("seed") not in (None, ""):
        seed = as_int(params["seed"], "seed")
        if seed >= 0:
            options["seed"] = seed
    honoured = OWN_PARAMS | set(request_option_specs())
    ignored |= {k for k in params if k not in honoured}
    return SpeechRequest(text, voice, options), media_type, streaming, sorted(ignored)


async def tts(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        if request.method == "POST":
            params = await read_json(request, gateway.limits.max_body_bytes, gateway.limits.max_reference_bytes)
        else:
            params = dict(request.query_params)
            if "aux_ref_audio_paths" in request.query_params:
                params["aux_ref_audio_paths"] = request.query_params.getlist("aux_ref_audio_paths")
        speech, media_type, streaming, ignored = await parse_tts(params, request)
    except HttpError as err:
        return gsv_error(err)
    headers = {"Content-Type": f"audio/{media_type}", "X-Voxpipe-Seed": str(speech.settle_seed())}
    if ignored:
        headers["X-Voxpipe-Ignored"] = ",".join(ignored)
    return AudioResponse(gateway, speech, MEDIA_TYPES[media_type], gsv_error, streaming=streaming,  # type: ignore[return-value]
                         headers=headers)


async def _set_weights(request: Request, kind: str) -> Response:
    """api_v2's model switch: the path must be a known voice's own checkpoint; that voice
    then speaks clips from http.reference_dirs, for every client of this gateway."""
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
    _state(request).selected_voice = voice
    return JSONResponse({"message": "success", "voice": voice,
                         "note": f"clips from http.reference_dirs now speak with {voice!r}; a clip inside a "
                                 f"voice's folder speaks with that voice"})


async def set_gpt_weights(request: Request) -> Response:
    return await _set_weights(request, "gpt")


async def set_sovits_weights(request: Request) -> Response:
    return await _set_weights(request, "sovits")


async def set_refer_audio(request: Request) -> Response:
    """api_v2's default reference clip: checked by /tts's rules, then used by requests
    that bring no ref_audio_path."""
    path = request.query_params.get("refer_audio_path", "")
    try:
        if not path:
            raise HttpError("bad_request", "refer_audio_path is required", param="refer_audio_path")
        choice = await choose_ref(path, request, "refer_audio_path")
        if choice.clip is not None:
            read_clip(choice.clip, "refer_audio_path", request.app.state.gateway.limits.max_reference_bytes)
    except HttpError as err:
        return gsv_error(err)
    _state(request).refer_audio = path
    return JSONResponse({"message": "success"})


async def control(request: Request) -> Response:
    return gsv_error(HttpError("not_supported", "/control is not available: the daemon's supervisor owns its "
                                                "processes; restart or stop the service instead (for example "
                                                "systemctl restart voxpipe)", param="command"))


routes = [Route("/tts", tts, methods=["GET", "POST"]),
          Route("/set_refer_audio", set_refer_audio, methods=["GET"]),
          Route("/set_gpt_weights", set_gpt_weights, methods=["GET"]),
          Route("/set_sovits_weights", set_sovits_weights, methods=["GET"]),
          Route("/control", control, methods=["GET", "POST"])]
