"""Turns a validated request into chunks: normalize, split within a phoneme budget,
phonemize each chunk for its voice."""
from __future__ import annotations

import time
from dataclasses import dataclass

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk, SynthesisRequest
from voxpipe.stages.engines import engine_names
from voxpipe.stages.phonemize import Phonemizer, PhonemizeError
from voxpipe.stages.text.gsv.phonemizer import GsvPhonemizer, sampling_options
from voxpipe.stages.text.normalize import normalize
from voxpipe.stages.text.split import resolve_policy, split_text
from voxpipe.stages.voices import VoiceCatalog, VoiceSpec

ENGINE_NAMES = tuple(engine_names())
OPTION_RANGES = {"noise_scale": (0.0, 2.0), "length_scale": (0.1, 5.0), "noise_w": (0.0, 2.0)}


class PlanError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    spec: VoiceSpec
    chunks: list[Chunk]
    text_chars: int


class Planner:
    def __init__(self, config: Config, catalog: VoiceCatalog) -> None:
        self.config = config
        self.catalog = catalog
        self._phonemizers: dict[str, Phonemizer] = {}

    def warm_up(self, voices: list[str]) -> None:
        """Load what the first request would otherwise pay for (espeak's data, the number
        readers), so it is not charged to whoever arrives first."""
        normalize("Warm up: 1,234.5 at 3:30 p.m. on 2024-03-05.")
        for name in voices:
            try:
                self.phonemizer(self.catalog.get(name)).count("Hello there.")
            except Exception:  # a voice that cannot warm up reports itself on first use
                continue

    def phonemizer(self, spec: VoiceSpec) -> Phonemizer:
        cached = self._phonemizers.get(spec.name)
        if cached is None or cached.spec != spec:
            cached = self._phonemizers[spec.name] = GsvPhonemizer(spec) if spec.family == "gpt-sovits" else Phonemizer(spec)
        return cached

    def plan(self, request: SynthesisRequest, deadline: float) -> Plan:
        """Raises VoiceError or PlanError with the code the client gets."""
        limits, front = self.config.limits, self.config.frontend
        spec = self.catalog.get(request.voice)
        if not request.text.strip():
            raise PlanError("empty_text", "text is empty")
        if len(request.text) > limits.max_text_chars:
            raise PlanError("too_long", f"text has {len(request.text)} characters; the limit is {limits.max_text_chars}")
        opts = request.options
        scales = {}
        for name, (low, high) in OPTION_RANGES.items():
            value = getattr(opts, name)
            value = getattr(spec, name) if value is None else value
            if not low <= value <= high:
                raise PlanError("bad_option", f"{name}={value} is outside [{low}, {high}]")
            scales[name] = value
        if not 0 <= opts.speaker_id < max(1, spec.num_speakers):
            raise PlanError("bad_option", f"speaker_id={opts.speaker_id}: voice {spec.name!r} has {spec.num_speakers} speaker(s)")
        engine = opts.engine or ""
        if engine and engine not in ENGINE_NAMES:
            raise PlanError("bad_option", f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_NAMES)}")
        gsv_sampling = {}
        if spec.family == "gpt-sovits":
            try:
                gsv_sampling = sampling_options(opts, spec.config["defaults"])
            except ValueError as exc:
                raise PlanError("bad_option", str(exc)) from None
        try:
            policy = resolve_policy(opts.policy or front.policy)
        except ValueError as exc:
            raise PlanError("bad_option", str(exc)) from None
        phonemizer = self.phonemizer(spec)
        try:
            pieces = split_text(normalize(request.text), budget=front.chunk_budget, count=phonemizer.count,
                                policy=policy, first_chunk=front.first_chunk if opts.first_chunk is None else opts.first_chunk,
                                first_chunk_words=front.first_chunk_words)
            id_lists = [phonemizer.text_to_ids(piece.text) for piece in pieces]
        except PhonemizeError as exc:
            raise PlanError("voice_unavailable", str(exc)) from None
        # Pieces with no phonemes (stray punctuation) would be silent chunks: leave them out.
        min_ids = 1 if spec.family == "gpt-sovits" else 4  # GPT-SoVITS ids carry no BOS/EOS/padding
        kept = [(piece, ids) for piece, ids in zip(pieces, id_lists) if len(ids) >= min_ids]
        if not kept:
            raise PlanError("unspeakable", "text has nothing to say")
        now = time.monotonic()
        chunks = [Chunk(request.request_id, seq, len(kept), spec.name, piece.text, ids.tolist(),
                        scales["noise_scale"], scales["length_scale"], scales["noise_w"], opts.speaker_id,
                        None if opts.seed is None else opts.seed + seq, request.stream, deadline, 0, now, engine)
                  for seq, (piece, ids) in enumerate(kept)]
        if spec.family == "gpt-sovits":  # language runs for BERT, and token sampling
            for chunk, (piece, _) in zip(chunks, kept):
                for key, value in {**phonemizer.chunk_fields(piece.text), **gsv_sampling}.items():
                    setattr(chunk, key, value)
        return Plan(spec, chunks, len(request.text))
