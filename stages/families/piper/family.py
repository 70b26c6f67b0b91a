"""Piper/VITS voices as a family (see stages/families/base.py for the interface)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.families.piper.engines import create_engine, engine_names
from voxpipe.stages.families.piper.loudness import VoiceLevels
from voxpipe.stages.engines.base import Engine, EngineSettings, LoadedVoice
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.base import Family, OptionError, Runner, RunnerSettings, TextError
from voxpipe.stages.families.piper.options import PiperOptions
from voxpipe.stages.families.piper.spec import bundled_voice, load_piper_spec, piper_model_files, piper_settings
from voxpipe.stages.families.piper.words import piper_words
from voxpipe.stages.families.runners import BatchRunner
from voxpipe.stages.families.words import chunk_word_spans
from voxpipe.stages.families.piper.phonemize import PhonemizeError, Phonemizer
from voxpipe.stages.text.normalize import normalize, normalize_parts
from voxpipe.stages.voices import VoiceSpec


WARM_UP_TEXT = "Hello, and welcome: warming up."


class PiperTextFrontend:
    """espeak-ng phoneme ids, wrapped with BOS/EOS and padding as piper does."""

    min_ids = 4  # BOS, one phoneme, padding, EOS

    def __init__(self, spec: VoiceSpec) -> None:
        self.phonemizer = Phonemizer(spec)

    def normalize(self, text: str) -> str:
        return normalize(text)

    def normalize_parts(self, text: str) -> Iterator[tuple[str, bool]]:
        return normalize_parts(text)

    def count(self, text: str) -> int:
        try:
            return self.phonemizer.count(text)
        except PhonemizeError as exc:
            raise TextError(str(exc)) from None

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        """The chunk's ids, and in extras its words with the ids that speak each."""
        try:
            phonemes = self.phonemizer.phonemes(text)
            ids, positions = self.phonemizer.ids_with_positions(phonemes)
            words = piper_words(self.phonemizer, text, phonemes, positions, len(ids))
        except PhonemizeError as exc:
            raise TextError(str(exc)) from None
        return ids.tolist(), {"words": words}

    def for_request(self, options: dict[str, Any]) -> PiperTextFrontend:
        return self  # no option changes how Piper reads text


def piper_item(chunk: Chunk) -> SynthesisItem:
    o = chunk.inputs.options
    return SynthesisItem(np.asarray(chunk.inputs.ids, dtype=np.int64), o["noise_scale"], o["length_scale"],
                         o["noise_w"], o["speaker_id"], chunk.seed, whole_request=chunk.count == 1,
                         leads_siblings=chunk.seq == 0 and chunk.count != 1)


class PiperFamily(Family):
    name = "piper"
    options = PiperOptions

    def claims(self, directory: Path) -> bool:
        return any(p.is_file() for p in directory.glob("*.onnx"))

    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        model, config = piper_model_files(directory)
        return load_piper_spec(name, model, config)

    def frontend(self, spec: VoiceSpec) -> PiperTextFrontend:
        return PiperTextFrontend(spec)

    def voice_defaults(self, spec: VoiceSpec) -> dict[str, Any]:
        settings = piper_settings(spec)
        return {"noise_scale": settings.noise_scale, "length_scale": settings.length_scale, "noise_w": settings.noise_w}

    def resolve_options(self, spec: VoiceSpec, params: dict[str, Any]) -> dict[str, Any]:
        resolved = super().resolve_options(spec, params)
        speakers = piper_settings(spec).num_speakers
        if resolved["speaker_id"] >= max(1, speakers):
            raise OptionError(f"speaker_id={resolved['speaker_id']}: voice {spec.name!r} has "
                              f"{speakers} speaker(s)")
        return resolved

    def engine_names(self) -> tuple[str, ...]:
        return tuple(engine_names())

    def create_engine(self, name: str, settings: EngineSettings) -> Engine:
        return create_engine(name, settings)

    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner:
        if engine.name == "null":  # no voice, no level: its audio is a stand-in for timing
            return BatchRunner(engine, settings, piper_item, chunk_word_spans)
        options = engine.settings.options
        cache = options.get("level_cache_dir")
        levels = VoiceLevels(engine, bool(options.get("loudness", True)), Path(str(cache)) if cache else None)

        def prepare(voice: LoadedVoice) -> None:
            """Before the voice's first chunk: its level, and one short sentence down each
            path a chunk takes (whole, and window by window), so that the first request
            after `ready` pays no first-run costs."""
            voice.details["level_gain"] = round(levels.prepare(voice), 4)  # shown in status
            if voice.details.get("warm"):
                return
            engine.warm_up(voice)
            ids = Phonemizer(voice.spec).text_to_ids(WARM_UP_TEXT)
            defaults = piper_settings(voice.spec)
            item = SynthesisItem(ids, defaults.noise_scale, defaults.length_scale, defaults.noise_w)
            engine.synthesize_timed(voice, [item])
            if settings.stream_frames > 0 and engine.can_stream:
                for _ in engine.synthesize_stream_timed(voice, item, settings.stream_frames):
                    pass
            voice.details["warm"] = True

        return BatchRunner(engine, settings, piper_item, chunk_word_spans, level=levels.apply, prepare=prepare)


    def builtin_voices(self) -> list[VoiceSpec]:
        return [bundled_voice()]

    def write_random_voice(self, voices_dir: Path, name: str, seed: int = 0, **variant: Any) -> Path:
        if variant:
            given = ", ".join(f"--{key}" for key in sorted(variant))
            raise ValueError(f"{given} is for gpt-sovits voices: random Piper voices come in one kind")
        from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice

        return write_random_piper_voice(voices_dir, name, seed=seed)
