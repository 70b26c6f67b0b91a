"""GPT-SoVITS voices as a family (see stages/families/base.py for the interface)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.ipc.messages import Chunk, WordSpan
from voxpipe.stages.engines.base import Engine, EngineSettings, LoadedVoice
from voxpipe.stages.families.base import Family, OptionError, Options, Piece, Runner, RunnerSettings, StepResult, option
from voxpipe.stages.families.gpt_sovits.spec import load_gsv_spec
from voxpipe.stages.families.words import even_spans, text_words
from voxpipe.stages.text.normalize import normalize
from voxpipe.stages.voices import VoiceSpec

ENGINE = "gpt-sovits"
DEFAULT_MAX_BATCH = 16  # sequences decoding at once


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
        from voxpipe.stages.text.gsv.phonemizer import GsvPhonemizer

        self.phonemizer = GsvPhonemizer(spec)

    def normalize(self, text: str) -> str:
        return normalize(text)

    def count(self, text: str) -> int:
        return self.phonemizer.count(text)

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        ids = self.phonemizer.text_to_ids(text).tolist()
        runs = self.phonemizer.chunk_fields(text)
        return ids, {"langs": runs["seg_langs"], "texts": runs["seg_texts"], "phones": runs["seg_phones"],
                     "word2ph": runs["seg_word2ph"]}


def gsv_item(chunk: Chunk):
    from voxpipe.stages.engines.gpt_sovits.item import GsvItem

    o, x = chunk.inputs.options, chunk.inputs.extras
    runs = tuple((lang, text, int(n), tuple(w2p)) for lang, text, n, w2p in
                 zip(x.get("langs", []), x.get("texts", []), x.get("phones", []), x.get("word2ph", [])))
    return GsvItem(np.asarray(chunk.inputs.ids, dtype=np.int64), o["noise_scale"], o["length_scale"], chunk.seed,
                   runs, o["top_k"], o["top_p"], o["temperature"], o["repetition_penalty"], o.get("sample_steps"))


class ContinuousRunner(Runner):
    """The engine's StreamRunner behind the family interface: sequences join and leave the
    running decoder batch between steps; audio comes in windows as tokens arrive."""

    def __init__(self, max_sequences: int) -> None:
        from voxpipe.stages.engines.gpt_sovits.serving import StreamRunner

        self.inner = StreamRunner(max_sequences)
        self.rates: dict[tuple[str, int], int] = {}
        self.samples: dict[tuple[str, int], int] = {}  # audio sent so far per chunk, for its words

    def __len__(self) -> int:
        return len(self.inner)

    def has_room(self) -> bool:
        return self.inner.has_room()

    @property
    def capacity(self) -> int:
        return self.inner.decoder.max_sequences

    def admit(self, voice: LoadedVoice, chunk: Chunk) -> None:
        self.inner.admit(voice, chunk, gsv_item(chunk))
        self.rates[(chunk.request_id, chunk.seq)] = voice.spec.sample_rate

    def wait_s(self, now: float) -> float:
        return 0.0 if len(self.inner) else math.inf

    def drop(self, request_id: str) -> list[Chunk]:
        return self._forget(self.inner.drop(request_id))

    def expire(self, now: float) -> list[Chunk]:
        return self._forget(self.inner.expire(now))

    def clear(self) -> list[Chunk]:
        ids = {request_id for request_id, _ in self.inner.streams}
        return [chunk for request_id in ids for chunk in self.drop(request_id)]

    def _forget(self, chunks: list[Chunk]) -> list[Chunk]:
        for chunk in chunks:
            self.rates.pop((chunk.request_id, chunk.seq), None)
            self.samples.pop((chunk.request_id, chunk.seq), None)
        return chunks

    def step(self, now: float) -> StepResult:
        inner = self.inner.step()
        result = StepResult(requeue=self._forget(list(inner.evicted)), oom_events=len(inner.evicted),
                            batch=len(self.inner) + len({(p.chunk.request_id, p.chunk.seq) for p in inner.pieces
                                                         if p.last}))
        result.failed = [(chunk, "engine_error", message) for chunk, message in self._pairs(inner.failed)]
        for p in inner.pieces:
            key = (p.chunk.request_id, p.chunk.seq)
            rate = self.rates.pop(key) if p.last else self.rates[key]
            total = self.samples.pop(key, 0) + len(p.audio)
            if not p.last:
                self.samples[key] = total
            words = gsv_chunk_words(p.chunk, total) if p.last else []
            result.pieces.append(Piece(p.chunk, p.audio, rate, p.part, p.last, p.synth_s, p.queued_s, words))
        return result

    def _pairs(self, failed: list[tuple[Chunk, str]]) -> list[tuple[Chunk, str]]:
        for chunk, _ in failed:
            self.rates.pop((chunk.request_id, chunk.seq), None)
            self.samples.pop((chunk.request_id, chunk.seq), None)
        return failed


def gsv_words(text: str) -> list[str]:
    """The words of a GPT-SoVITS chunk: the text's words, each CJK character one word."""
    words: list[str] = []
    for word in text_words(text):
        run = ""
        for ch in word + " ":
            if _is_cjk(ch) or ch == " " or not (ch.isalnum() or ch in "'-."):
                stripped = run.strip("'-.")
                words += [stripped] if any(c.isalnum() for c in stripped) else []
                words += [ch] if _is_cjk(ch) else []
                run = ""
            else:
                run += ch
    return words


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u3040" <= ch <= "\u30ff"


def gsv_chunk_words(chunk: Chunk, total: int) -> list[WordSpan]:
    """GPT-SoVITS has no durations to read (its decoder generates semantic tokens with no
    alignment to the phones), so only a chunk's ends are measured: its words share the
    chunk's audio by their letters (a CJK character counting two)."""
    words = gsv_words(chunk.text)
    weights = [sum(2 if _is_cjk(c) else 1 for c in w if c.isalnum()) for w in words]
    return even_spans(words, weights, total)


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
        defaults = dict(spec.config.get("defaults", {}))
        speed = defaults.pop("speed", None)
        if speed:
            defaults["length_scale"] = 1.0 / float(speed)
        return defaults

    def resolve_options(self, spec: VoiceSpec, params: dict[str, Any]) -> dict[str, Any]:
        from voxpipe.stages.engines.gpt_sovits.voice_v3 import STEP_RANGE

        version = spec.config.get("version")
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
        from voxpipe.stages.engines.gpt_sovits.engine import GptSovitsEngine

        return GptSovitsEngine(settings)

    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner:
        return ContinuousRunner(settings.max_batch if settings.max_batch > 0 else engine.max_batch)
