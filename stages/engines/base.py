"""The one interface every synthesis engine implements.

The worker knows nothing else about an engine: it loads voices through it, hands it
batches of phoneme-id sequences and gets float32 audio back, one array per item.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

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
class SynthesisItem:
    """One chunk to synthesize: phoneme ids plus the per-request sampling settings."""

    phoneme_ids: np.ndarray  # int64, 1-D, already wrapped with BOS/EOS/pad ids
    noise_scale: float
    length_scale: float
    noise_w: float
    speaker_id: int = 0
    seed: int | None = None
    # GPT-SoVITS: language runs (lang, norm_text, n_phones, word2ph) and token sampling
    text_segments: tuple[tuple[str, str, int, tuple[int, ...]], ...] = ()
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35


@dataclass
class LoadedVoice:
    """A voice resident in one worker: its spec, the engine's model object, its size."""

    spec: VoiceSpec
    model: Any
    nbytes: int


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

    @abc.abstractmethod
    def synthesize(self, voice: LoadedVoice, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        """Synthesize a batch; returns one float32 mono array per item, trimmed exactly."""

    def unload_voice(self, voice: LoadedVoice) -> None:
        """Release what load_voice took (GPU memory, sessions). Default: drop references."""
        voice.model = None

    def memory_info(self) -> dict[str, int]:
        """Free/total bytes the engine can still use, for batch budgets; empty if unknown."""
        return {}
