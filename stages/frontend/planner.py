"""Turns a validated request into chunks: the voice's family checks the options and
provides the text frontend; text is normalized, split within a budget, and each piece
becomes the family's inputs."""
from __future__ import annotations

import time
from dataclasses import dataclass

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk, ChunkReference, FamilyInputs, Reference, SynthesisRequest, draw_seed
from voxpipe.stages import families
from voxpipe.stages.families.base import Family, OptionError, TextError, TextFrontend
from voxpipe.stages.references import ReferenceError, ReferenceStore
from voxpipe.stages.text.split import resolve_policy, split_text
from voxpipe.stages.voices import VoiceCatalog, VoiceSpec


class PlanError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    spec: VoiceSpec
    chunks: list[Chunk]
    text_chars: int
    seed: int  # chunk n renders with seed + n; reported to the client


class Planner:
    def __init__(self, config: Config, catalog: VoiceCatalog, references: ReferenceStore | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.references = references  # where requests' own reference clips go; None: refused
        self._frontends: dict[str, tuple[VoiceSpec, TextFrontend]] = {}

    def warm_up(self, voices: list[str]) -> None:
        """Load what the first request would otherwise pay for (espeak's data, the number
        readers), so it is not charged to whoever arrives first."""
        for name in voices:
            try:
                spec = self.catalog.get(name)
                frontend = self.frontend(spec)
                frontend.count(frontend.normalize("Warm up: 1,234.5 at 3:30 p.m. on 2024-03-05. Hello there."))
            except Exception:  # a voice that cannot warm up reports itself on first use
                continue

    def frontend(self, spec: VoiceSpec) -> TextFrontend:
        cached = self._frontends.get(spec.name)
        if cached is None or cached[0] != spec:
            cached = self._frontends[spec.name] = (spec, families.get(spec.family).frontend(spec))
        return cached[1]

    def plan(self, request: SynthesisRequest, deadline: float) -> Plan:
        """Raises VoiceError or PlanError with the code the client gets."""
        limits, front = self.config.limits, self.config.frontend
        spec = self.catalog.get(request.voice)
        if not request.text.strip():
            raise PlanError("empty_text", "text is empty")
        if len(request.text) > limits.max_text_chars:
            raise PlanError("too_long", f"text has {len(request.text)} characters; the limit is {limits.max_text_chars}")
        opts = request.options
        try:
            family = families.get(spec.family)
        except families.FamilyError as exc:
            raise PlanError("voice_unavailable", str(exc)) from None
        options = self._options(family, spec, opts.params)
        reference = self._reference(family, spec, opts.reference)
        engine = opts.engine or ""
        if engine and engine not in family.engine_names():
            raise PlanError("bad_option", f"engine {engine!r} cannot run {family.name} voices; "
                                          f"choose one of {', '.join(family.engine_names())}")
        try:
            policy = resolve_policy(opts.policy or front.policy)
        except ValueError as exc:
            raise PlanError("bad_option", str(exc)) from None
        frontend = self.frontend(spec)
        if hasattr(frontend, "for_request"):  # optional: a family whose options change how text is read
            frontend = frontend.for_request(options)
        try:
            pieces = split_text(frontend.normalize(request.text), budget=front.chunk_budget, count=frontend.count,
                                policy=policy, first_chunk=front.first_chunk if opts.first_chunk is None else opts.first_chunk,
                                first_chunk_words=front.first_chunk_words)
            inputs = [frontend.inputs(piece.text) for piece in pieces]
        except TextError as exc:
            raise PlanError("voice_unavailable", str(exc)) from None
        except OptionError as exc:  # e.g. a language the text turned out to need is not installed
            raise PlanError("bad_option", str(exc)) from None
        # Pieces with no phonemes (stray punctuation) would be silent chunks: leave them out.
        kept = [(piece, ids, extras) for piece, (ids, extras) in zip(pieces, inputs) if len(ids) >= frontend.min_ids]
        if not kept:
            raise PlanError("unspeakable", "text has nothing to say")
        now = time.monotonic()
        # Every chunk gets a concrete seed, so any replay of it renders the same audio.
        seed = draw_seed() if opts.seed is None else opts.seed
        chunks = [Chunk(request.request_id, seq, len(kept), spec.name, spec.family, piece.text,
                        FamilyInputs(ids, options, extras), seed + seq, request.stream, deadline, 0, now, engine,
                        reference)
                  for seq, (piece, ids, extras) in enumerate(kept)]
        return Plan(spec, chunks, len(request.text), seed)

    def _reference(self, family: Family, spec: VoiceSpec, reference: Reference | None) -> ChunkReference | None:
        """The request's own reference clip, checked and stored for the workers."""
        if reference is None:
            return None
        try:
            text, language = family.check_reference(spec, reference.text, reference.language)
        except OptionError as exc:
            raise PlanError("bad_option", str(exc)) from None
        if self.references is None or family.reference_seconds is None:
            raise PlanError("bad_option", "this daemon takes no reference clips")
        try:
            stored = self.references.chunk_reference(reference, family.reference_seconds)
        except ReferenceError as exc:
            raise PlanError("bad_reference", str(exc)) from None
        except OSError as exc:  # the run directory's file system is full, say: not the client's fault
            raise PlanError("no_memory", f"the daemon cannot keep the reference clip: {exc}") from None
        stored.text, stored.language = text, language
        return stored

    @staticmethod
    def _options(family: Family, spec: VoiceSpec, params: dict) -> dict:
        if not all(isinstance(k, str) for k in params) or not all(
                v is None or type(v) in (int, float, bool, str) for v in params.values()):
            raise PlanError("bad_option", "options must be names with plain values (numbers, true/false, text)")
        try:
            return family.resolve_options(spec, params)
        except OptionError as exc:
            raise PlanError("bad_option", str(exc)) from None
