"""Many tiny random Piper voices for fleet tests and benchmarks: one is written (a few
seconds, it exports a graph), the rest are renamed copies of it sharing its model file."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def voice_names(count: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


def write_fleet_voices(directory: Path, count: int, prefix: str = "v") -> list[str]:
    """Write `count` Piper voices named v000, v001, ... into `directory`; returns their names."""
    from voxpipe.stages import families

    if count < 1:
        raise ValueError(f"count: {count} must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    names = voice_names(count, prefix)
    first = directory / names[0]
    if not (first / f"{names[0]}.onnx").exists():
        families.get("piper").write_random_voice(directory, names[0], seed=0)
    config = json.loads((first / f"{names[0]}.onnx.json").read_text(encoding="utf-8"))
    for name in names[1:]:
        target = directory / name
        if (target / f"{name}.onnx").exists():
            continue
        target.mkdir(exist_ok=True)
        try:
            os.link(first / f"{names[0]}.onnx", target / f"{name}.onnx")
        except OSError:
            shutil.copyfile(first / f"{names[0]}.onnx", target / f"{name}.onnx")
        config["dataset"] = name
        (target / f"{name}.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return names
