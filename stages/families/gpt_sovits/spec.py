"""A GPT-SoVITS voice folder: `voice.toml` beside the user's own checkpoints
(docs/gpt-sovits.md)."""
from __future__ import annotations

from pathlib import Path

from voxpipe.stages.voices import VoiceError, VoiceSpec


def load_gsv_spec(name: str, directory: Path) -> VoiceSpec:
    from voxpipe.stages.engines.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml

    try:
        config = read_voice_toml(directory)
        stat = Path(config["sovits"]).stat()
    except (VoiceConfigError, OSError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: {exc}") from exc
    defaults = config["defaults"]
    return VoiceSpec(name=name, family="gpt-sovits", model_path=Path(config["sovits"]),
                     config_path=directory / "voice.toml", sample_rate=config["sample_rate"], espeak_voice="",
                     phoneme_type="gpt-sovits", phoneme_id_map={}, noise_scale=float(defaults["noise_scale"]),
                     length_scale=1.0 / float(defaults["speed"]), noise_w=0.0, config=config,
                     model_stamp=(stat.st_mtime_ns, stat.st_size))
