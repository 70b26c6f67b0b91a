"""Turns a validated request into chunks: the voice's family checks the options and
provides the text frontend; text is normalized, split within a budget, and each piece
becomes the family's inputs."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

from voxpipe.config import Config
from voxpipe.ipc.messages import Chunk, ChunkReference, FamilyInputs, Reference, SynthesisRequest, draw_seed
from voxpipe.stages import families
from voxpipe.stages.families.base import Family, OptionError, TextError, TextFrontend
from voxpipe.stages.references import ReferenceError, ReferenceStore
from voxpipe.stages.text.split import TextChunk, resolve_policy, split_text
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


@dataclass(frozen=True)
class PlanSetup:
    """What a request's plan needs besides its text, checked before any of it is read."""

    spec: VoiceSpec
    frontend: TextFrontend
    options: dict
    engine: str
    policy: str
    first_chunk: bool
    seed: int  # the request's: chunk n renders with seed + n
    reference: ChunkReference | None = None  # the request's own reference clip

    def chunk(self, request: SynthesisRequest, seq: int, count: int, text: str, ids: list[int], extras: dict,
              deadline: float, planned_at: float) -> Chunk:
        return Chunk(request.request_id, seq, count, self.spec.name, self.spec.family, text,
                     FamilyInputs(ids, self.options, extras), self.seed + seq, request.stream, deadline, 0, planned_at,
                     self.engine, reference=self.reference, timeline=request.options.timeline)


class PlanStream:
    """A request's plan made as its text is read: a part of the text (stages/text/stream.py)
    is normalized and split, and its pieces are turned into chunks one at a time, so the
    first chunk can go to synthesis while the rest of the text is unread. The chunks are
    those of `Planner.plan` on the whole text.

    Until the last chunk is known, chunks carry `count` 0 (the total is not known yet).
    The newest chunk is held back until the next one is made or the text ends (a piece
    with nothing to say is left out, so only then is it known whether a chunk is the
    last), and the last chunk goes out with the total."""

    def __init__(self, setup: PlanSetup, request: SynthesisRequest, deadline: float, config: Config) -> None:
        self.setup, self.request, self.deadline = setup, request, deadline
        self._front = config.frontend
        frontend = setup.frontend
        # "none" asks for no cuts but the budget's, which may fall anywhere in the text, and a
        # family's frontend may not read text in parts: then the text is read whole.
        by_parts = getattr(frontend, "normalize_parts", None)
        self._parts: Iterator[tuple[str, bool]] = (
            by_parts(request.text) if by_parts is not None and setup.policy != "none"
            else iter([(frontend.normalize(request.text), True)]))
        self._pieces: deque[TextChunk] = deque()
        self._first_pending = setup.first_chunk  # the first chunk rule applies to the first part with words
        self._text_done = False
        self._held: tuple[str, list[int], dict] | None = None
        self.planned_at = time.monotonic()  # every chunk of the plan carries it
        self.made = 0  # chunks handed out
        self.done = False

    @property
    def spec(self) -> VoiceSpec:
        return self.setup.spec

    def advance(self, budget_s: float = 0.0) -> list[Chunk]:
        """Plan for about `budget_s` (at least one step: a part split, or a piece made
        into a chunk), stopping early once a chunk is ready; returns the chunks ready to
        go. Raises PlanError (`unspeakable` when the whole text has nothing to say,
        `voice_unavailable` when the voice's G2P fails)."""
        started = time.perf_counter()
        ready: list[Chunk] = []
        while not self.done and not ready:
            try:
                ready.extend(self._step())
            except TextError as exc:
                raise PlanError("voice_unavailable", str(exc)) from None
            except OptionError as exc:  # e.g. a language the text turned out to need is not installed
                raise PlanError("bad_option", str(exc)) from None
            if time.perf_counter() - started >= budget_s:
                break
        return ready

    def _step(self) -> list[Chunk]:
        if self._pieces:
            piece = self._pieces.popleft()
            ids, extras = self.setup.frontend.inputs(piece.text)
            if len(ids) < self.setup.frontend.min_ids:
                return []  # nothing to say (stray punctuation): left out, as in the whole plan
            out = self._release(0)
            self._held = (piece.text, ids, extras)
            return out
        if self._text_done:
            if self._held is None and self.made == 0:
                raise PlanError("unspeakable", "text has nothing to say")
            self.done = True
            return self._release(self.made + (self._held is not None))
        part = next(self._parts, None)
        if part is None:
            self._text_done = True
            return []
        text, last = part
        front = self._front
        pieces = split_text(text, budget=front.chunk_budget, count=self.setup.frontend.count,
                            policy=self.setup.policy, first_chunk=self._first_pending,
                            first_chunk_words=front.first_chunk_words, final=last)
        if pieces:
            self._first_pending = False
        self._pieces.extend(pieces)
        self._text_done = last
        return []

    def _release(self, count: int) -> list[Chunk]:
        if self._held is None:
            return []
        text, ids, extras = self._held
        self._held = None
        chunk = self.setup.chunk(self.request, self.made, count, text, ids, extras, self.deadline, self.planned_at)
        self.made += 1
        return [chunk]


class Planner:
    def __init__(self, config: Config, catalog: VoiceCatalog, references: ReferenceStore | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.references = references  # where requests' own reference clips go; None: refused
        self._frontends: dict[str, tuple[VoiceSpec, TextFrontend]] = {}

    def warm_up(self, voices: list[str]) -> None:
        """Load what the first request would otherwise pay for (espeak's data, the number
        readers, the G2P), so it is not charged to whoever arrives first."""
        for name in voices:
            try:
                spec = self.catalog.get(name)
                frontend = self.frontend(spec)
                text = frontend.normalize("Warm up: 1,234.5 at 3:30 p.m. on 2024-03-05. Hello there.")
                frontend.count(text)
                frontend.inputs(text)  # the G2P and word timing a chunk's inputs take
            except Exception:  # a voice that cannot warm up reports itself on first use
                continue

    def frontend(self, spec: VoiceSpec) -> TextFrontend:
        cached = self._frontends.get(spec.name)
        if cached is None or cached[0] != spec:
            cached = self._frontends[spec.name] = (spec, families.get(spec.family).frontend(spec))
        return cached[1]

    def plan(self, request: SynthesisRequest, deadline: float) -> Plan:
        """The whole plan at once: the text normalized and split whole (the reference the
        streamed plan is checked against). Raises VoiceError or PlanError with the code the
        client gets."""
        setup = self._setup(request)
        front, frontend = self.config.frontend, setup.frontend
        try:
            pieces = split_text(frontend.normalize(request.text), budget=front.chunk_budget, count=frontend.count,
                                policy=setup.policy, first_chunk=setup.first_chunk,
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
        chunks = [setup.chunk(request, seq, len(kept), piece.text, ids, extras, deadline, now)
                  for seq, (piece, ids, extras) in enumerate(kept)]
        return Plan(setup.spec, chunks, len(request.text), setup.seed)

    def start(self, request: SynthesisRequest, deadline: float) -> PlanStream:
        """A plan made a part of the text at a time (see PlanStream). Raises VoiceError or
        PlanError for what is wrong with the request itself; what is wrong with its text
        shows as the stream goes."""
        return PlanStream(self._setup(request), request, deadline, self.config)

    def _setup(self, request: SynthesisRequest) -> PlanSetup:
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
        first_chunk = front.first_chunk if opts.first_chunk is None else opts.first_chunk
        # Every chunk gets a concrete seed, so any replay of it renders the same audio.
        seed = draw_seed() if opts.seed is None else opts.seed
        return PlanSetup(spec, frontend, options, engine, policy, first_chunk, seed, reference)

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
