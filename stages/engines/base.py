"""The one interface every synthesis engine implements.

An engine is a runtime (onnxruntime, torch, TensorRT, ...): it loads voices and turns a
batch of its family's items into float32 audio, one array per item. The worker reaches
an engine only through its family's runner (stages/families/).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from voxpipe.stages.voices import VoiceSpec


@dataclass(frozen=True)
class EngineSettings:
    """How an engine may use the machine; fixed for the life of a worker."""

    device: str = "cpu"  # "cpu" or "cuda" (the worker's one visible GPU)
    threads: int = 1  # intra-op threads on CPU
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8" where an engine supports it
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamPiece:
    """One window of an item's audio streamed by an engine."""

    audio: np.ndarray
    per_id: np.ndarray | None = None  # samples per input id, on the first piece where the engine knows them
    # The item's last piece. An engine that knows it says so, so the piece goes out as the
    # chunk's end; one that cannot tell ends its stream instead (an empty last part follows).
    last: bool = False


@dataclass
class LoadedVoice:
    """A voice resident in one worker: its spec, the engine's model object, its size."""

    spec: VoiceSpec
    model: Any
    nbytes: int
    details: dict[str, Any] = field(default_factory=dict)  # what the engine chose for it, for status


class EngineError(Exception):
    """An engine could not load a voice or run a batch; the message names the voice."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of any runtime (torch's, onnxruntime's, Python's)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return "outofmemory" in text.replace(" ", "") or "out of memory" in text or "failed to allocate" in text


class Engine(abc.ABC):
    """A synthesis runtime (onnxruntime, torch, TensorRT, ...)."""

    name: ClassVar[str]
    max_batch: ClassVar[int] = 1  # items one synthesize() call handles at once; 1 = loops
    bytes_per_phoneme: float | None = None  # measured working memory per padded phoneme, if known

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def load_voice(self, spec: VoiceSpec) -> LoadedVoice:
        """Load a voice's model; raise EngineError naming the voice on failure."""

    def warm_up(self, voice: LoadedVoice) -> None:
        """Pay what the voice's first call would pay that a plain call through the family's
        paths does not (e.g. one session per thread count): run before the worker is ready."""

    def synthesize(self, voice: LoadedVoice, items: Sequence[Any]) -> list[np.ndarray]:
        """Synthesize a batch of the family's items; one float32 mono array per item, trimmed
        exactly. Engines whose family's runner does the synthesis itself (GPT-SoVITS) have none."""
        raise EngineError(f"engine {self.name!r} runs only through its family's runner")

    def synthesize_stream(self, voice: LoadedVoice, item: Any, window_frames: int) -> Iterator[np.ndarray]:
        """One item's audio in windows of about `window_frames` latent frames, each as soon
        as it is decoded; joined, they equal `synthesize`'s audio. Engines that can stream
        override this or `synthesize_stream_timed` (whose pieces this then yields)."""
        if type(self).synthesize_stream_timed is Engine.synthesize_stream_timed:
            raise EngineError(f"engine {self.name!r} cannot stream inside a chunk")
        for piece in self.synthesize_stream_timed(voice, item, window_frames):
            yield piece.audio

    def synthesize_timed(self, voice: LoadedVoice, items: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """`synthesize`, with each item's samples per input id (they sum to its audio's
        length) where the engine knows them; None where it does not. Engines that can override it."""
        return [(audio, None) for audio in self.synthesize(voice, items)]

    def synthesize_stream_timed(self, voice: LoadedVoice, item: Any, window_frames: int) -> Iterator[StreamPiece]:
        """`synthesize_stream`'s pieces, the first with the item's samples per input id
        where the engine knows them (see synthesize_timed), the last marked where the
        engine knows it."""
        for audio in self.synthesize_stream(voice, item, window_frames):
            yield StreamPiece(audio)

    @property
    def can_stream(self) -> bool:
        cls = type(self)
        return (cls.synthesize_stream is not Engine.synthesize_stream
                or cls.synthesize_stream_timed is not Engine.synthesize_stream_timed)

    def unload_voice(self, voice: LoadedVoice) -> None:
        """Release what load_voice took (GPU memory, sessions). Default: drop references."""
        voice.model = None

    def memory_info(self) -> dict[str, int]:
        """Free/total bytes the engine can still use, for batch budgets; empty if unknown."""
        return {}
