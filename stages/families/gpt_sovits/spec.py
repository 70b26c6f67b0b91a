"""A GPT-SoVITS voice folder: `voice.toml` beside the user's own checkpoints
(docs/gpt-sovits.md)."""
from __future__ import annotations

from pathlib import Path

from voxpipe.stages.families.gpt_sovits.voice_config import GsvVoiceConfig, VoiceConfigError, read_voice_toml
from voxpipe.stages.voices import VoiceError, VoiceSpec, file_stamp


def load_gsv_spec(name: str, directory: Path) -> VoiceSpec:
    """Its files: (SoVITS model, GPT model, voice.toml, reference clip); its settings: the
    checked voice.toml."""
    try:
        config = read_voice_toml(directory)
        stamp = file_stamp(config.sovits)
    except (VoiceConfigError, OSError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: {exc}") from exc
    return VoiceSpec(name=name, family="gpt-sovits", sample_rate=config.sample_rate,
                     files=(config.sovits, config.gpt, directory / "voice.toml", config.reference.audio),
                     stamp=stamp, settings=config)


def gsv_config(spec: VoiceSpec) -> GsvVoiceConfig:
    config = spec.settings
    assert isinstance(config, GsvVoiceConfig), f"voice {spec.name!r} is not a GPT-SoVITS voice"
    return config
