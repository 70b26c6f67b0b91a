"""GPT-SoVITS voices as a family (see stages/families/base.py for the interface).

Torch and the models load only in the worker (`create_engine`, `runner`): the frontend
reads voice.toml and runs the G2P, nothing more."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from voxpipe.stages.engines.base import Engine, EngineSettings
from voxpipe.stages.families.base import Family, OptionError, Options, Runner, RunnerSettings, option
from voxpipe.stages.families.gpt_sovits.spec import gsv_config, load_gsv_spec
from voxpipe.stages.families.gpt_sovits.voice_config import STEP_RANGE
from voxpipe.stages.text.normalize import normalize, normalize_parts
from voxpipe.stages.voices import VoiceSpec

ENGINE = "gpt-sovits"


@dataclass
class GsvOptions(Options):
    noise_scale: float | None = option(None, 0.0, 2.0, doc="SoVITS noise (voice's default)")
    length_scale: float | None = option(None, 0.1, 5.0, doc="1 / speed (voice's default speed)")
    top_k: int | None = option(None, 0, 1024, doc="0: no top-k cut; 1: greedy")
    top_p: float | None = option(None, 0.0, 1.0, open_low=True)
    temperature: float | None = option(None, 0.01, 5.0)
    repetition_penalty: float | None = option(None, 1.0, 5.0)
    sample_steps: int | None = option(None, 1, 128, doc="v3/v4: CFM steps (voice's default: v3 32, v4 8)")


class GsvTextFrontend:
    """GPT-SoVITS phone ids plus the language runs the engine aligns BERT features with."""

    min_ids = 1  # no BOS/EOS/padding in GPT-SoVITS ids

    def __init__(self, spec: VoiceSpec) -> None:
        from voxpipe.stages.families.gpt_sovits.text.phonemizer import GsvPhonemizer

        self.phonemizer = GsvPhonemizer(spec)

    def normalize(self, text: str) -> str:
        return normalize(text)

    def normalize_parts(self, text: str) -> Iterator[tuple[str, bool]]:
        return normalize_parts(text)

    def count(self, text: str) -> int:
        return self.phonemizer.count(text)

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        ids = self.phonemizer.text_to_ids(text).tolist()
        runs = self.phonemizer.chunk_fields(text)
        return ids, {"langs": runs["seg_langs"], "texts": runs["seg_texts"], "phones": runs["seg_phones"],
                     "word2ph": runs["seg_word2ph"]}


class GptSovitsFamily(Family):
    name = "gpt-sovits"
    options = GsvOptions

    def claims(self, directory: Path) -> bool:
        return (directory / "voice.toml").is_file()

    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        return load_gsv_spec(name, directory)

    def frontend(self, spec: VoiceSpec) -> GsvTextFrontend:
        return GsvTextFrontend(spec)

    def voice_defaults(self, spec: VoiceSpec) -> dict[str, Any]:
        defaults = dict(gsv_config(spec).defaults)
        speed = defaults.pop("speed", None)
        if speed:
            defaults["length_scale"] = 1.0 / float(speed)
        return defaults

    def resolve_options(self, spec: VoiceSpec, params: dict[str, Any]) -> dict[str, Any]:
        version = gsv_config(spec).version
        steps = params.get("sample_steps")
        if steps is not None and version not in STEP_RANGE:
            raise OptionError(f"sample_steps applies to v3/v4 voices; {spec.name!r} is a {version or 'v1-v2ProPlus'} voice")
        resolved = super().resolve_options(spec, params)
        if version in STEP_RANGE:
            low, high = STEP_RANGE[version]
            if not low <= resolved["sample_steps"] <= high:
                raise OptionError(f"sample_steps={resolved['sample_steps']} is outside [{low}, {high}] "
                                  f"for a {version} voice")
        return resolved

    def engine_names(self) -> tuple[str, ...]:
        return (ENGINE,)

    def create_engine(self, name: str, settings: EngineSettings) -> Engine:
        from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine

        return GptSovitsEngine(settings)

    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner:
        from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

        return GsvRunner(settings.max_batch if settings.max_batch > 0 else engine.max_batch,
                         compute=getattr(engine, "compute", contextlib.nullcontext))

    def write_random_voice(self, voices_dir: Path, name: str, seed: int = 0, **variant: Any) -> Path:
        from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice

        unknown = set(variant) - {"version", "size", "lora"}
        if unknown:
            raise ValueError(f"random GPT-SoVITS voices take version, size and lora, not {', '.join(sorted(unknown))}")
        if variant.get("lora") and variant.get("version") not in ("v3", "v4"):
            raise ValueError("lora applies to v3/v4 voices")
        return write_random_gsv_voice(voices_dir, name, seed=seed, **variant)

    def http_routes(self) -> list[Any]:
        from voxpipe.stages.families.gpt_sovits.http.routes import routes

        return list(routes)
