"""Every message that crosses a process boundary, declared once.

Messages are dataclasses; `voxpipe.ipc.codec` turns them into msgpack arrays `[tag, *fields]`
and back, checking each field's type. Audio never travels inside a message: a message
carries an `ShmHandle` into a shared-memory pool, or (to clients) the audio rides in a
separate frame beside the message.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import ClassVar

PROTOCOL_VERSION = 1


@dataclass
class ShmHandle:
    """Where a tensor lives: pool, first slot, slot generation, and how to view it."""

    TAG: ClassVar[int] = 1
    pool: str
    slot: int
    generation: int
    offset: int
    nbytes: int
    dtype: str
    shape: list[int]


@dataclass
class Reference:
    """A request's own reference clip (GPT-SoVITS): the voice speaks with this clip's timbre
    and prosody instead of its own. `audio` is the clip file's content (any format
    soundfile or PyAV reads; the client library reads a path for you); `text` is what the
    clip says, in `language`; `aux` are further clips whose timbre is fused in (v1-v2ProPlus
    voices). The frontend decodes and checks it, keeps it as a content-addressed file for
    the workers and hands them a `ChunkReference`."""

    TAG: ClassVar[int] = 3
    audio: bytes
    text: str = ""
    language: str = ""
    aux: list[bytes] = field(default_factory=list)


@dataclass
class SynthesisOptions:
    """Per-request knobs. The pipeline's own are fields; a model family's (Piper's
    noise_scale, GPT-SoVITS's top_k, ...) ride in `params` and are checked by the voice's
    family against the options it declares (unknown name or bad value: `bad_option`)."""

    TAG: ClassVar[int] = 2
    seed: int | None = None  # chunk n of a request uses seed + n; None: the daemon draws one (see draw_seed)
    policy: str | None = None  # text cut policy
    first_chunk: bool | None = None
    engine_stream: bool = False  # within-sentence streaming where the engine supports it
    engine: str | None = None  # runtime for the voice's family (onnx, torch, tensorrt); None: the daemon's
    params: dict = field(default_factory=dict)  # family option name -> scalar; absent: the voice's default
    reference: Reference | None = None  # the request's own reference clip (GPT-SoVITS voices)
    timeline: bool = False  # debug: the request's steps come back as TimelineEvents (`voxpipe say --timeline`)


SEED_RANGE = 2**31  # drawn seeds lie in [0, SEED_RANGE): any engine's generator takes them


def draw_seed() -> int:
    """A random seed for a request that names none. It is drawn once, where the request
    is first planned, and kept for the request's whole life: every replay of a chunk
    (after a worker, merger or frontend restart, or on another replica) renders the same
    audio with it, and the request's result reports it so the audio can be made again."""
    return secrets.randbelow(SEED_RANGE)


PIPELINE_OPTIONS = frozenset(f for f in SynthesisOptions.__dataclass_fields__ if f not in ("TAG", "params"))


def synthesis_options(**options: object) -> SynthesisOptions:
    """Options from keyword arguments as users write them (`seed=1, noise_scale=0.5`): the
    pipeline's own become fields, the rest the family's `params`; None means unset."""
    fields = {k: v for k, v in options.items() if k in PIPELINE_OPTIONS}
    params = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS and v is not None}
    return SynthesisOptions(**fields, params=params)


# ---- client <-> frontend -------------------------------------------------------------

@dataclass
class Hello:
    """First message of a client connection; the daemon answers Welcome or Error."""

    TAG: ClassVar[int] = 10
    protocol: int
    client: str


@dataclass
class Welcome:
    TAG: ClassVar[int] = 11
    protocol: int
    version: str
    run_id: str
    incarnation: str = ""  # changes when the frontend restarts: requests in flight were lost


@dataclass
class SynthesisRequest:
    TAG: ClassVar[int] = 12
    request_id: str
    text: str
    voice: str
    stream: bool
    options: SynthesisOptions
    timeout_s: float | None = None
    resume_samples: int = 0  # a resent request: the client already has this much audio


@dataclass
class Cancel:
    TAG: ClassVar[int] = 13
    request_id: str


@dataclass
class StatusQuery:
    TAG: ClassVar[int] = 14
    query_id: str


@dataclass
class StatusReply:
    TAG: ClassVar[int] = 15
    query_id: str
    status: dict


@dataclass
class TimelineEvent:
    """One step of a request on its way (a debug option, SynthesisOptions.timeline): which
    stage, what it did, for which chunk (-1: the request), from `start` to `end` in
    time.monotonic() seconds (CLOCK_MONOTONIC: one clock for all processes of a machine)."""

    TAG: ClassVar[int] = 22
    stage: str
    what: str
    seq: int
    start: float
    end: float


@dataclass
class WordSpan:
    """A word of the text and where it is spoken, in samples: of the chunk's audio on a
    ChunkAudio, of the request's audio on a Fragment. `end` is exclusive."""

    TAG: ClassVar[int] = 21
    text: str
    start: int
    end: int


@dataclass
class Fragment:
    """Audio for the next contiguous span of a request. To clients the int16 PCM samples
    ride in the frame after this one; inside the daemon they sit in shared memory.
    `words` are the request's words that end inside this fragment (or at its end)."""

    TAG: ClassVar[int] = 16
    request_id: str
    index: int
    sample_rate: int
    samples: int
    handle: ShmHandle | None = None
    chunks_done: int = 0  # progress: chunks of the request merged so far
    chunks: int = 0  # chunks in the request; 0 while its text is still being planned
    planned_at: float = 0.0  # inside the daemon: which plan of the request this audio is of
    words: list[WordSpan] = field(default_factory=list)
    seed: int | None = None  # to clients: the seed the request runs with (a resend passes it on)
    timeline: list[TimelineEvent] = field(default_factory=list)  # with SynthesisOptions.timeline: steps since the last


@dataclass
class Result:
    """Final message of a successful request: totals and per-stage timings (seconds)."""

    TAG: ClassVar[int] = 17
    request_id: str
    sample_rate: int
    samples: int
    fragments: int
    chunks: int
    timings: dict
    planned_at: float = 0.0  # inside the daemon: which plan of the request this is of
    words: list[WordSpan] = field(default_factory=list)  # words no fragment carried (normally none)
    seed: int | None = None  # the seed the request ran with: pass it as `seed` to render the same audio
    timeline: list[TimelineEvent] = field(default_factory=list)  # steps no fragment carried


@dataclass
class Error:
    TAG: ClassVar[int] = 18
    request_id: str
    code: str
    message: str


@dataclass
class Ping:
    TAG: ClassVar[int] = 19
    nonce: int


@dataclass
class Pong:
    """The answer to a Ping; with nonce 0 also an unsolicited probe clients ignore."""

    TAG: ClassVar[int] = 20
    nonce: int
    incarnation: str = ""


# ---- frontend -> worker -> merger -------------------------------------------------------

@dataclass
class FamilyInputs:
    """A model family's inputs for one chunk, made by its text frontend and read only by
    its runner in the worker; the pipeline moves them without looking inside."""

    TAG: ClassVar[int] = 36
    ids: list[int]  # the family's token ids (Piper: phoneme ids with BOS/EOS/padding)
    options: dict  # every option the family declares, resolved (request, else the voice's default)
    extras: dict = field(default_factory=dict)  # more per-chunk data (GPT-SoVITS: its language runs)


@dataclass
class ChunkReference:
    """A request's reference clip as workers see it: decoded clips in the daemon's run
    directory, named by their content hash (the frontend writes them, the supervisor
    removes the directory at exit), plus the transcript and its language. Workers key
    their conditioning cache on (voice, clip hashes, text, language)."""

    TAG: ClassVar[int] = 37
    clip: str  # path of the decoded main clip (float32 WAV), its stem the content hash
    text: str
    language: str
    aux: list[str] = field(default_factory=list)  # paths of further clips, fused into the timbre

    def key(self) -> tuple[str, ...]:
        from pathlib import PurePath

        return (PurePath(self.clip).stem, self.text, self.language, *(PurePath(a).stem for a in self.aux))


@dataclass
class Chunk:
    """One piece of a request's text, ready to synthesize."""

    TAG: ClassVar[int] = 30
    request_id: str
    seq: int
    count: int  # chunks in the plan; 0 while the plan is still being made (the last chunk has it)
    voice: str
    family: str
    text: str
    inputs: FamilyInputs
    seed: int | None
    stream: bool
    deadline: float  # time.monotonic() seconds; CLOCK_MONOTONIC is shared by all processes
    attempt: int = 0
    submitted_at: float = 0.0
    engine: str = ""  # "" = the worker's default engine
    reference: ChunkReference | None = None  # the request's own reference clip; None: the voice's
    timeline: bool = False  # report its steps (SynthesisOptions.timeline)


@dataclass
class ChunkAudio:
    """A worker's audio for a chunk (or one window of it, with engine streaming)."""

    TAG: ClassVar[int] = 31
    request_id: str
    seq: int
    count: int
    sample_rate: int
    handle: ShmHandle
    synth_s: float
    queued_s: float
    part: int = 0
    last_part: bool = True
    stream: bool = False
    deadline: float = 0.0
    # The plan the chunk belongs to (its Chunk.submitted_at, the same for every chunk of a
    # plan): a request planned again (resent after a frontend restart) is a new plan, and
    # audio of the old one must not be merged into it.
    planned_at: float = 0.0
    words: list[WordSpan] = field(default_factory=list)  # the chunk's words (any part may carry some)
    timeline: list[TimelineEvent] = field(default_factory=list)  # the worker's steps for this part


@dataclass
class ChunkDone:
    """Worker -> frontend: a chunk left the worker, freeing a credit; on failure the code
    says whether another worker may retry it."""

    TAG: ClassVar[int] = 33
    request_id: str
    seq: int
    ok: bool
    code: str = ""
    message: str = ""
    # The merger restarts the worker knew of when it sent this (MergerLost.generation): a
    # chunk reported done before the worker heard of the latest restart may have sent
    # its audio, or part of it, to the merger that died.
    merger_generation: int = 0


@dataclass
class WorkerState:
    """Worker -> frontend on connect and after changes: what it holds and can take."""

    TAG: ClassVar[int] = 34
    worker: str
    voices: list[str]
    credits: int
    ready: bool


@dataclass
class DropRequest:
    """Frontend -> worker/merger: forget a request (cancelled, expired or failed)."""

    TAG: ClassVar[int] = 35
    request_id: str
    reason: str


# ---- merger -> frontend ------------------------------------------------------------------

@dataclass
class RequestFailed:
    TAG: ClassVar[int] = 40
    request_id: str
    code: str
    message: str
    planned_at: float = 0.0


# ---- stages <-> supervisor -----------------------------------------------------------------

@dataclass
class Heartbeat:
    TAG: ClassVar[int] = 50
    role: str
    name: str
    pid: int
    ready: bool
    stats: dict = field(default_factory=dict)


# Supervisor -> stage commands: one message each, so a handler dispatches on the type and
# every command's arguments are typed and checked on the wire.

@dataclass
class Stop:
    """Any stage: leave the loop now (after a drain, or at shutdown)."""

    TAG: ClassVar[int] = 51


@dataclass
class Drain:
    """Frontend: accept no new requests, finish the accepted ones. HTTP stage: answer
    /ready with 503 so load balancers stop sending."""

    TAG: ClassVar[int] = 53


@dataclass
class Rescan:
    """Frontend and workers: look at the voices directory again now (SIGHUP)."""

    TAG: ClassVar[int] = 54


@dataclass
class Reset:
    """Workers and merger: a new frontend started; forget every request it did not hand on."""

    TAG: ClassVar[int] = 55


@dataclass
class WorkerLost:
    """Frontend: a worker died; re-run its chunks elsewhere."""

    TAG: ClassVar[int] = 56
    worker: str


@dataclass
class ProducerLost:
    """Merger: a worker died; free the slots its pool still had in flight to the merger."""

    TAG: ClassVar[int] = 57
    pool: str
    pid: int


@dataclass
class MergerLost:
    """Frontend: the merger died; reclaim its fragments and re-run what it had merged.
    Workers: chunks they were sending in parts start over, so the new merger gets every part."""

    TAG: ClassVar[int] = 58
    pool: str
    pid: int
    generation: int = 0  # how many times the merger has been replaced, this time included


CONTROL_MESSAGES: tuple[type, ...] = (Stop, Drain, Rescan, Reset, WorkerLost, ProducerLost, MergerLost)


@dataclass
class SupervisorReport:
    """Supervisor -> frontend, every heartbeat period: the process table for status."""

    TAG: ClassVar[int] = 52
    ready: bool
    draining: bool
    processes: list
    info: dict = field(default_factory=dict)


ALL_MESSAGES: tuple[type, ...] = (
    ShmHandle, Reference, SynthesisOptions, Hello, Welcome, SynthesisRequest, Cancel, StatusQuery,
    StatusReply, TimelineEvent, WordSpan, Fragment, Result, Error, Ping, Pong, FamilyInputs, ChunkReference, Chunk,
    ChunkAudio,
    ChunkDone, WorkerState, DropRequest, RequestFailed, Heartbeat, *CONTROL_MESSAGES, SupervisorReport,
)
