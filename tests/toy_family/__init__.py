"""A toy model family, kept in the tests folder, to show that a family plugs in through
its own folder and one config line (`[families] toy = "tests.toy_family:ToyFamily"`)
without any pipeline file naming it.

Its voices are folders with a `toy.json` ({"sample_rate": ..., "base_hz": ...}); its text
frontend maps letters to ids 1..26; its engine renders each id as a short sine tone whose
pitch follows the id, so tests can check exactly what reached the engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice
from voxpipe.stages.families.base import Family, Options, Runner, RunnerSettings, option
from voxpipe.stages.families.runners import BatchRunner
from voxpipe.stages.voices import VoiceError, VoiceSpec, file_stamp

TONE_S = 0.02  # seconds of audio per id


@dataclass
class ToyOptions(Options):
    pitch_scale: float = option(1.0, 0.25, 4.0, doc="multiplies every tone's pitch")


@dataclass(frozen=True)
class ToySettings:
    base_hz: float  # the pitch of id 0


@dataclass(frozen=True)
class ToyItem:
    ids: tuple[int, ...]
    pitch_scale: float


class ToyFrontend:
    min_ids = 1

    def normalize(self, text: str) -> str:
        return " ".join(text.split())

    def count(self, text: str) -> int:
        return sum(ch.isalpha() for ch in text)

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        ids = [ord(ch) - ord("a") + 1 for ch in text.lower() if "a" <= ch <= "z"]
        return ids, {"words": len(text.split())}


class ToyEngine(Engine):
    name = "toy"
    max_batch = 4

    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        return LoadedVoice(spec, spec.settings.base_hz, 1024)

    def synthesize(self, voice: LoadedVoice, items: Sequence[ToyItem]) -> list[np.ndarray]:
        rate = voice.spec.sample_rate
        t = np.arange(int(TONE_S * rate)) / rate
        out = []
        for item in items:
            if not item.ids:
                raise EngineError("toy: no ids")
            tones = [0.3 * np.sin(2 * np.pi * voice.model * item.pitch_scale * (1 + i / 26) * t) for i in item.ids]
            out.append(np.concatenate(tones).astype(np.float32))
        return out


class ToyFamily(Family):
    name = "toy"
    options = ToyOptions

    def claims(self, directory: Path) -> bool:
        return (directory / "toy.json").is_file()

    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        path = directory / "toy.json"
        try:
            config = json.loads(path.read_text())
            return VoiceSpec(name=name, family="toy", sample_rate=int(config["sample_rate"]), files=(path,),
                             stamp=file_stamp(path), settings=ToySettings(float(config["base_hz"])))
        except (OSError, ValueError, KeyError) as exc:
            raise VoiceError("voice_unavailable", name, f"voice {name!r}: bad toy.json: {exc}") from exc

    def frontend(self, spec: VoiceSpec) -> ToyFrontend:
        return ToyFrontend()

    def engine_names(self) -> tuple[str, ...]:
        return ("toy",)

    def create_engine(self, name: str, settings: EngineSettings) -> Engine:
        return ToyEngine(settings)

    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner:
        return BatchRunner(engine, settings, toy_item)

    def write_random_voice(self, voices_dir: Path, name: str, seed: int = 0, **variant: Any) -> Path:
        if set(variant) - {"sample_rate"}:
            raise ValueError(f"toy voices take sample_rate only, not {', '.join(sorted(variant))}")
        rng = np.random.default_rng(seed)
        return write_toy_voice(voices_dir, name, variant.get("sample_rate", 16000), float(rng.uniform(100, 400)))


def toy_item(chunk: Chunk) -> ToyItem:
    return ToyItem(tuple(chunk.inputs.ids), chunk.inputs.options["pitch_scale"])


def write_toy_voice(voices_dir: Path, name: str, sample_rate: int = 16000, base_hz: float = 200.0) -> Path:
    folder = voices_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.json").write_text(json.dumps({"sample_rate": sample_rate, "base_hz": base_hz}))
    return folder
