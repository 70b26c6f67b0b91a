"""`voice.toml`: how a GPT-SoVITS voice directory describes the user's files.

    version = "v2"                  # v2 | v2Pro | v2ProPlus | v3 | v4 (v1 too); checked against the .pth,
                                    # which says it when this line is left out (a full v4 .pth must say it here)
    gpt = "my_voice-e15.ckpt"       # GPT-SoVITS's own files, unconverted, beside voice.toml
    sovits = "my_voice_e8_s96.pth"
    pretrained_dir = "/opt/GPT-SoVITS/GPT_SoVITS/pretrained_models"   # default: VOICES_DIR/.gsv-pretrained
    language = "auto"               # text language of requests (their text_lang's default): zh | en | ja |
                                    # ko | yue | auto | auto_yue | all_zh | all_ja | all_yue | all_ko
                                    # (v1: zh | en | ja | auto | all_zh | all_ja)
    max_tokens_per_phone = 0        # > 0: a text's decoding stops after this many semantic tokens per
                                    # phone (25 tokens a second), EOS or not: a guard against a model that
                                    # runs on; 0 (default): upstream's limit only (50 * the GPT's max_sec)

    [reference]                     # the clip (3-10 s) the voice imitates, and what it says
    audio = "ref.wav"
    text = "参考音频说的话。"
    language = "zh"                 # the same names

    [defaults]                      # per-request options fall back to these
    top_k = 15
    top_p = 1.0
    temperature = 1.0
    repetition_penalty = 1.35
    noise_scale = 0.5
    speed = 1.0
    sample_steps = 32               # v3/v4 only: CFM steps (default 32 for v3, 8 for v4)

    [precision]                     # optional; default: the daemon's worker.gsv_*_precision (auto)
    decoder = "auto"                # the decoder's batched steps: auto | fp32 | bf16 | fp16 | int8
    prefill = "auto"                # the decoder's prefills (a text's first pass): auto | fp32 | int8
    renderer = "auto"               # v1-v2ProPlus's vocoder: auto | fp32 | bf16 | fp16

Relative paths are relative to the voice directory. Reading it needs no torch (the
frontend process reads it too). The version is None when voice.toml leaves it out and
the SoVITS file's header does not say it (v1-v2ProPlus: their weights tell, at load).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.stages.families.gpt_sovits.languages import LANGS, V1_LANGS

VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")
SAMPLE_RATE = 32000
MEL_VERSIONS = ("v3", "v4")  # CFM mel decoder + vocoder: their own rate and a sample_steps default
MEL_SAMPLE_RATE = {"v3": 24000, "v4": 48000}
SAMPLE_STEPS = {"v3": 32, "v4": 8}
STEP_RANGE = {"v3": (4, 128), "v4": (4, 32)}  # CFM steps a request may ask for
# The precisions of a voice's parts (precision.py runs them; "auto" probes per machine).
PRECISIONS = {"decoder": ("fp32", "bf16", "fp16", "int8"), "renderer": ("fp32", "bf16", "fp16"),
              "prefill": ("fp32", "int8")}
DEFAULTS = {"top_k": 15, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.35, "noise_scale": 0.5,
            "speed": 1.0}
PRETRAINED_DIRNAME = ".gsv-pretrained"
_TOP_KEYS = {"family", "version", "gpt", "sovits", "pretrained_dir", "language", "sample_rate", "reference",
             "defaults", "precision", "max_tokens_per_phone"}


@dataclass(frozen=True)
class Reference:
    """The clip a voice imitates and what it says."""

    audio: Path
    text: str
    language: str


@dataclass(frozen=True)
class GsvVoiceConfig:
    """A checked voice.toml, paths absolute: a GPT-SoVITS voice's typed settings."""

    version: str | None
    gpt: Path
    sovits: Path
    pretrained_dir: Path
    language: str  # of requests' text: zh | en | auto
    sample_rate: int
    reference: Reference
    defaults: dict[str, float] = field(hash=False)  # option defaults, `speed` among them
    precision: dict[str, str] = field(default_factory=dict, hash=False)  # part -> auto | a precision; absent: daemon's
    max_tokens_per_phone: float = 0.0  # > 0: decoding stops after this many tokens per phone of the text


class VoiceConfigError(ValueError):
    """voice.toml is missing something or names files that are not there."""


# A SoVITS file's first two bytes name the CFM versions' files: 02 a full v3 model,
# 03 / 04 a v3 / v4 LoRA over its base (a full v4 model carries no tag: say version = "v4").
MEL_HEADERS = {b"02": "v3", b"03": "v3", b"04": "v4"}


def _check_version(version: str) -> str:
    if version not in VERSIONS:
        raise VoiceConfigError(f"voice.toml: unknown version {version!r}; supported: {', '.join(VERSIONS)}")
    return version


def _mel_version_of(sovits: Path) -> str | None:
    try:
        with open(sovits, "rb") as f:
            return MEL_HEADERS.get(f.read(2))
    except OSError as exc:
        raise VoiceConfigError(f"voice.toml: cannot read {sovits.name}: {exc}") from None


def read_voice_toml(directory: Path) -> GsvVoiceConfig:
    """Parse and check `directory/voice.toml`; paths come back absolute."""
    path = directory / "voice.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VoiceConfigError(f"{path.name}: {exc}") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise VoiceConfigError(f"voice.toml: unknown key {unknown[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}")
    family = raw.get("family", "gpt-sovits")
    if family != "gpt-sovits":
        raise VoiceConfigError(f"voice.toml: family {family!r} is not 'gpt-sovits'")
    # Left out: the SoVITS checkpoint says which version it is (its header now, its weights
    # when the voice loads).
    version = _check_version(str(raw["version"])) if raw.get("version") is not None else None
    reference = raw.get("reference")
    if not isinstance(reference, dict):
        raise VoiceConfigError("voice.toml: missing [reference] table (audio, text, language)")
    files = {}
    for key, value in (("gpt", raw.get("gpt")), ("sovits", raw.get("sovits")), ("reference.audio", reference.get("audio"))):
        if not isinstance(value, str) or not value:
            raise VoiceConfigError(f"voice.toml: missing {key}")
        file = (directory / value).resolve()
        if not file.is_file():
            raise VoiceConfigError(f"voice.toml: {key} file {value!r} not found")
        files[key] = file
    if version is None:  # v1-v2ProPlus: told apart by the weights when the voice loads
        version = _mel_version_of(files["sovits"])
    text = reference.get("text")
    if not isinstance(text, str) or not text.strip():
        raise VoiceConfigError("voice.toml: missing reference.text (what the reference clip says)")
    ref_lang = str(reference.get("language", "auto"))
    lang = str(raw.get("language", "auto"))
    names = V1_LANGS if version == "v1" else LANGS
    for key, value in (("reference.language", ref_lang), ("language", lang)):
        if value not in names:
            raise VoiceConfigError(f"voice.toml: {key} {value!r}: use one of {', '.join(names)}"
                                   + (" (a v1 voice)" if version == "v1" else ""))
    defaults = dict(DEFAULTS)
    if version in MEL_VERSIONS:
        defaults["sample_steps"] = SAMPLE_STEPS[version]
    for key, value in (raw.get("defaults") or {}).items():
        if key not in defaults:
            raise VoiceConfigError(f"voice.toml: unknown default {key!r}; known: {', '.join(defaults)}")
        if type(value) not in (int, float) or (key in ("top_k", "sample_steps") and type(value) is not int):
            raise VoiceConfigError(f"voice.toml: defaults.{key} must be a number")
        defaults[key] = value
    cap = raw.get("max_tokens_per_phone", 0)
    if type(cap) not in (int, float) or cap < 0:
        raise VoiceConfigError("voice.toml: max_tokens_per_phone must be a number >= 0 (0: no cap of its own)")
    precision = raw.get("precision") or {}
    if not isinstance(precision, dict):
        raise VoiceConfigError("voice.toml: [precision] must be a table (decoder, renderer)")
    for part, value in precision.items():
        if part not in PRECISIONS:
            raise VoiceConfigError(f"voice.toml: precision.{part}: unknown part; known: {', '.join(PRECISIONS)}")
        if value != "auto" and value not in PRECISIONS[part]:
            raise VoiceConfigError(f"voice.toml: precision.{part} {value!r}: use auto or one of "
                                   f"{', '.join(PRECISIONS[part])}")
    pretrained = raw.get("pretrained_dir")
    pretrained_dir = (directory / pretrained if pretrained else directory.parent / PRETRAINED_DIRNAME).resolve()
    return GsvVoiceConfig(version, files["gpt"], files["sovits"], pretrained_dir, lang,
                          int(raw.get("sample_rate", MEL_SAMPLE_RATE.get(version, SAMPLE_RATE))),
                          Reference(files["reference.audio"], text, ref_lang), defaults, dict(precision), float(cap))
