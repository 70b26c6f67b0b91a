"""What a model family is to the pipeline: one interface, no other knowledge.

A family (Piper/VITS, GPT-SoVITS, ...) owns four things:
- its voices: which folders are its own and how to read them into a `VoiceSpec`;
- its text frontend: text (already normalized and split) to its token ids and extras;
- its request options: declared once as a dataclass with defaults and checks;
- its runner: how its chunks become audio on an engine (batched, windowed, continuous),
  which the worker drives through `Runner.step()` alone.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol

import numpy as np

from voxpipe.config import Config
# Options are declared in a module of their own (light: the CLI reads them); re-exported here.
from voxpipe.stages.families.options import OptionError, Options, option  # noqa: F401
from voxpipe.ipc.messages import Chunk, WordSpan
from voxpipe.stages.engines.base import Engine, EngineSettings, LoadedVoice
from voxpipe.stages.voices import VoiceSpec


class TextFrontend(Protocol):
    """A voice's view of text, used by the planner."""

    min_ids: int  # pieces with fewer ids have nothing to say and are left out

    def normalize(self, text: str) -> str: ...

    def normalize_parts(self, text: str) -> Iterator[tuple[str, bool]]:
        """Optional: `normalize(text)` a part at a time, lazily, each with whether it is the
        last, cut where the parts split on their own give the whole text's chunks
        (stages/text/stream.py). A frontend without it has its text read whole."""

    def count(self, text: str) -> int:
        """A cheap length estimate in the family's units, for splitting within a budget."""

    def inputs(self, text: str) -> tuple[list[int], dict[str, Any]]:
        """Token ids and per-chunk extras for one piece of text. Raises TextError, or
        OptionError where the request's options make the text unreadable."""

    def for_request(self, options: dict[str, Any]) -> TextFrontend:
        """Optional: the frontend as one request's resolved options read text
        (GPT-SoVITS: its text language); a frontend without it reads every request alike."""


class TextError(Exception):
    """Text could not be turned into a voice's inputs (the voice's G2P failed)."""


@dataclass
class Piece:
    """Audio a runner made ready: a whole chunk, or one part of a streamed chunk."""

    chunk: Chunk
    audio: np.ndarray  # float32 mono
    sample_rate: int
    part: int = 0
    last: bool = True
    synth_s: float = 0.0  # in the engine for this chunk
    queued_s: float = 0.0  # from submission to the engine taking it
    words: list[WordSpan] = field(default_factory=list)  # the chunk's words, in samples of the chunk's audio


@dataclass
class StepResult:
    pieces: list[Piece] = field(default_factory=list)
    failed: list[tuple[Chunk, str, str]] = field(default_factory=list)  # (chunk, error code, message)
    requeue: list[Chunk] = field(default_factory=list)  # out of memory: queue again, run later
    batch: int = 0  # items in this step's engine call (0: none ran)
    oom_events: int = 0


@dataclass(frozen=True)
class RunnerSettings:
    """What the worker's configuration says about running chunks."""

    batch_wait_s: float = 0.005
    batch_phonemes: int = 8192
    stream_frames: int = 0  # > 0: engines that can stream inside a chunk do, this many frames a window
    max_batch: int = 0  # 0: the engine's own


class Runner(abc.ABC):
    """Turns a family's chunks into audio on one engine. The worker admits chunks while
    `has_room()`, then calls `step()` whenever `wait_s()` says so; a step does one unit
    of work (a batch, a window, a decoding step) and returns what became ready."""

    @abc.abstractmethod
    def admit(self, voice: LoadedVoice, chunk: Chunk) -> None:
        """Take a chunk; raise EngineError if its inputs are unusable."""

    @abc.abstractmethod
    def step(self, now: float) -> StepResult: ...

    @abc.abstractmethod
    def drop(self, request_id: str) -> list[Chunk]:
        """Forget a request's chunks (cancelled, failed); -> them."""

    @abc.abstractmethod
    def clear(self) -> list[Chunk]:
        """Forget everything held (a new frontend knows none of it); -> the chunks."""

    @abc.abstractmethod
    def wait_s(self, now: float) -> float:
        """0: step now; > 0: a partial batch may fill this long; inf: nothing to do."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def has_room(self) -> bool:
        return True

    def prepare(self, voice: LoadedVoice) -> None:
        """A voice was loaded (preloaded or for a chunk): pay now, before its first chunk,
        what the runner would otherwise pay on it (e.g. measuring the voice's level)."""

    @property
    def capacity(self) -> int:
        """Chunks it can use at once (a full batch): the worker asks for at least this many."""
        return 1

    def expire(self, now: float) -> list[Chunk]:
        """Chunks whose deadline passed while held here; they leave the runner."""
        return []

    def stats(self) -> dict[str, Any]:
        """For status: `queued` (chunks waiting for an engine call), and what else it keeps."""
        return {}


class Family(abc.ABC):
    """A model family as a plug-in (see the module docstring)."""

    name: ClassVar[str]
    options: ClassVar[type[Options]]  # the family's request options, a dataclass of option(...) fields
    # Families whose voices speak from a reference clip a request may bring: the clip's
    # length bounds in seconds (low, high); None: requests bring no clip.
    reference_seconds: ClassVar[tuple[float, float] | None] = None

    @abc.abstractmethod
    def claims(self, directory: Path) -> bool:
        """True if a voices-directory folder holds a voice of this family."""

    @abc.abstractmethod
    def load_spec(self, name: str, directory: Path) -> VoiceSpec:
        """Read a voice folder; raise VoiceError('voice_unavailable') naming what is wrong."""

    @abc.abstractmethod
    def frontend(self, spec: VoiceSpec) -> TextFrontend: ...

    def voice_defaults(self, spec: VoiceSpec) -> dict[str, Any]:
        """Option defaults a voice sets for itself (from its config)."""
        return {}

    def resolve_options(self, spec: VoiceSpec, params: dict[str, Any]) -> dict[str, Any]:
        return self.options.resolve(params, self.voice_defaults(spec))

    def check_reference(self, spec: VoiceSpec, text: str, language: str) -> tuple[str, str]:
        """A request's reference transcript and its language as the workers will read
        them (-> (text, language)); OptionError if the voice cannot take them."""
        raise OptionError(f"{spec.name!r} is a {self.name} voice: it takes no reference clip")

    @abc.abstractmethod
    def engine_names(self) -> tuple[str, ...]:
        """The runtimes that can run this family; the first is its default."""

    def engine_for(self, requested: str, default: str) -> str:
        """The runtime a chunk runs on: the requested one, else the daemon's if this family
        has it, else the family's own default."""
        names = self.engine_names()
        for name in (requested, default):
            if name and name in names:
                return name
        return names[0]

    @abc.abstractmethod
    def create_engine(self, name: str, settings: EngineSettings) -> Engine: ...

    @abc.abstractmethod
    def runner(self, engine: Engine, settings: RunnerSettings) -> Runner: ...

    def builtin_voices(self) -> list[VoiceSpec]:
        """Voices that exist without a voices directory (a bundled default voice)."""
        return []

    def write_random_voice(self, voices_dir: Path, name: str, seed: int = 0, **variant: Any) -> Path:
        """A voice of this family with random weights, in its own folder under `voices_dir`
        (`voxpipe voice random`: tests and trials with nothing downloaded); -> the folder.
        `variant`: the family's own choices (GPT-SoVITS: version, size, lora); ValueError
        for one it does not take."""
        raise NotImplementedError(f"the {self.name} family cannot write random voices")

    def http_routes(self) -> list[Any]:
        """The routes of the family's own HTTP API (starlette routes), mounted by the HTTP
        stage beside the OpenAI routes; none by default."""
        return []


def runner_settings(config: Config) -> RunnerSettings:
    worker = config.worker
    return RunnerSettings(worker.batch_wait_ms / 1000.0, worker.batch_phonemes, worker.engine_stream_frames,
                          worker.max_batch)
