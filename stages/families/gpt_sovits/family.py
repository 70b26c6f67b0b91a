"""GPT-SoVITS voices as a family (see stages/families/base.py for the interface).

Torch and the models load only in the worker (`create_engine`, `runner`): the frontend
reads voice.toml and runs the G2P, nothing more."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from voxpipe.stages.engines.base import Engine, EngineSettings
from voxpipe.stages.families.base import Family, OptionError, Runner, RunnerSettings
from voxpipe.stages.families.gpt_sovits.options import GsvOptions
from voxpipe.stages.families.gpt_sovits.spec import gsv_config, load_gsv_spec
from voxpipe.stages.families.gpt_sovits.voice_config import STEP_RANGE
from voxpipe.stages.voices import VoiceSpec

ENGINE = "gpt-sovits"


class GsvTextFrontend:
    """GPT-SoVITS phone ids plus the language runs the engine aligns BERT features with,
    the text read in one language name (`for_request`: a request's text_lang)."""

    min_ids = 1  # no BOS/EOS/padding in GPT-SoVITS ids

    def __init__(self, spec: VoiceSpec, lang: str | None = None, phonemizer: Any = None) -> None:
        from voxpipe.stages.families.gpt_sovits.text.phonemizer import GsvPhonemizer

        self.spec = spec
        self.phonemizer = phonemizer or GsvPhonemizer(spec)
        self.lang: str = lang or self.phonemizer.lang

    def for_request(self, options: dict[str, Any]) -> GsvTextFrontend:
        lang = options.get("text_lang") or self.phonemizer.lang
        return self if lang == self.lang else GsvTextFrontend(self.spec, lang, self.phonemizer)

    def normalize(self, text: str) -> str:
        from voxpipe.stages.families.gpt_sovits.text import normalize_for

        return normalize_for(text, self.lang)

    def normalize_parts(self, text: str) -> Iterator[tuple[str, bool]]:
        from voxpipe.stages.families.gpt_sovits.text import normalize_parts_for

        return normalize_parts_for(text, self.lang)

    def count(self, text: str) -> int:
        return self.phonemizer.count(text)

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        try:
            ids = self.phonemizer.text_to_ids(text, self.lang).tolist()
            runs = self.phonemizer.chunk_fields(text, self.lang)
        except ValueError as exc:  # a language this voice or this install cannot read
            raise OptionError(str(exc)) from None
        return ids, {"langs": runs["seg_langs"], "texts": runs["seg_texts"], "phones": runs["seg_phones"],
                     "word2ph": runs["seg_word2ph"]}


class GptSovitsFamily(Family):
    name = "gpt-sovits"
    options = GsvOptions
    reference_seconds = (3.0, 10.0)  # GPT-SoVITS's own rule for reference clips

    def claims(self, directory: Path) -> bool:
        return (directory / "voice.toml").is_file()

    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        return load_gsv_spec(name, directory)

    def frontend(self, spec: VoiceSpec) -> GsvTextFrontend:
        return GsvTextFrontend(spec)

    def voice_defaults(self, spec: VoiceSpec) -> dict[str, Any]:
        cfg = gsv_config(spec)
        defaults = dict(cfg.defaults)
        speed = defaults.pop("speed", None)
        if speed:
            defaults["length_scale"] = 1.0 / float(speed)
        defaults["text_lang"] = cfg.language
        return defaults

    def resolve_options(self, spec: VoiceSpec, params: dict[str, Any]) -> dict[str, Any]:
        version = gsv_config(spec).version
        steps = params.get("sample_steps")
        if steps is not None and version not in STEP_RANGE:
            raise OptionError(f"sample_steps applies to v3/v4 voices; {spec.name!r} is a {version or 'v1-v2ProPlus'} voice")
        from voxpipe.stages.families.gpt_sovits.text import check_language

        resolved = super().resolve_options(spec, params)
        try:
            check_language(resolved["text_lang"], version)
        except ValueError as exc:  # not a language of this voice's version, or its packages are missing
            raise OptionError(str(exc)) from None
        if version in STEP_RANGE:
            low, high = STEP_RANGE[version]
            if not low <= resolved["sample_steps"] <= high:
                raise OptionError(f"sample_steps={resolved['sample_steps']} is outside [{low}, {high}] "
                                  f"for a {version} voice")
        return resolved

    def check_reference(self, spec: VoiceSpec, text: str, language: str) -> tuple[str, str]:
        """A request's prompt: its transcript must be read in a language the voice's text
        frontend knows (empty: the voice's reference language)."""
        from voxpipe.stages.families.gpt_sovits.text import segments

        language = language or gsv_config(spec).reference.language
        if not text.strip():
            raise OptionError("a reference clip needs its transcript (prompt_text): what the clip says")
        try:
            runs = segments(text, language)
        except ValueError as exc:
            raise OptionError(f"reference language (prompt_lang): {exc}") from None
        if not runs:
            raise OptionError(f"the reference transcript {text!r} has nothing to read")
        return text.strip(), language

    def engine_names(self) -> tuple[str, ...]:
        return (ENGINE,)

    def create_engine(self, name: str, settings: EngineSettings) -> Engine:
        from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine

        return GptSovitsEngine(settings)

    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner:
        from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

        return GsvRunner(settings.max_batch if settings.max_batch > 0 else engine.max_batch,
                         compute=getattr(engine, "compute", contextlib.nullcontext),
                         deciding=getattr(engine, "deciding", contextlib.nullcontext),
                         conditioning=getattr(engine, "conditioning", None))

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
