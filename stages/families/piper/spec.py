"""A Piper voice folder: `NAME/*.onnx` beside `NAME/*.onnx.json` (piper's own layout)."""
from __future__ import annotations

import json
from pathlib import Path

from voxpipe.stages.voices import VoiceError, VoiceSpec


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
    """Read a Piper voice's JSON config; raise VoiceError('voice_unavailable') if unusable."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        inference = config.get("inference", {})
        stat = model_path.stat()
        return VoiceSpec(
            name=name,
            family="piper",
            model_path=model_path,
            config_path=config_path,
            sample_rate=int(config["audio"]["sample_rate"]),
            espeak_voice=str(config.get("espeak", {}).get("voice", "en-us")),
            phoneme_type=str(config.get("phoneme_type", "espeak")),
            phoneme_id_map={str(k): [int(i) for i in v] for k, v in config["phoneme_id_map"].items()},
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            num_speakers=int(config.get("num_speakers", 1)),
            config=config,
            model_stamp=(stat.st_mtime_ns, stat.st_size),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VoiceError("voice_unavailable", name, f"voice {name!r}: unreadable config {config_path.name}: {exc}") from exc
