"""Runners any family can use for engines that synthesize whole items:
`BatchRunner` batches queued chunks of one voice by padded length (dynamic batching) and,
for streamed chunks on engines that can, decodes a chunk window by window so its first
audio comes after one window.

With a word timer, each chunk's pieces carry its words: on its first piece where the
engine tells the samples per id (they are known before any audio), else on its last
(an estimate needs the chunk's whole length)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.engines.base import Engine, EngineError, LoadedVoice, StreamPiece, is_out_of_memory
from voxpipe.stages.families.base import Piece, Runner, RunnerSettings, StepResult
from voxpipe.stages.families.words import WordTimer
from voxpipe.stages.worker.batching import BatchBudget, take_batch
from voxpipe.stages.worker.chunk_queue import ChunkQueue, chunk_priority

ItemMaker = Callable[[Chunk], Any]
Leveller = Callable[[LoadedVoice, np.ndarray], np.ndarray]  # a voice's audio as it leaves the engine -> as it goes out


@dataclass
class _Window:
    """A chunk being decoded window by window."""

    chunk: Chunk
    voice: LoadedVoice
    pieces: Iterator[StreamPiece] | None = None
    part: int = 0
    started: float = 0.0
    samples: int = 0  # so far
    timed: bool = False  # its words went out with its first piece


class BatchRunner(Runner):
    def __init__(self, engine: Engine, settings: RunnerSettings, make_item: ItemMaker,
                 word_timer: WordTimer | None = None, level: Leveller | None = None,
                 prepare: Callable[[LoadedVoice], Any] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.make_item = make_item
        self.word_timer = word_timer
        self.level = level  # applied to every piece, whole chunk or window, whatever the engine
        self._prepare = prepare
        max_items = settings.max_batch if settings.max_batch > 0 else getattr(engine, "max_batch", 1)
        memory = engine.memory_info()
        self.budget = BatchBudget.from_memory(max_items, memory.get("free"), engine.bytes_per_phoneme,
                                              settings.batch_phonemes)
        self.pending = ChunkQueue()
        self.voices: dict[tuple[str, int], LoadedVoice] = {}
        self.windows: list[_Window] = []
        self._since: float | None = None  # when the pending queue last became non-empty
        self.can_stream = settings.stream_frames > 0 and engine.can_stream

    def __len__(self) -> int:
        return len(self.pending) + len(self.windows)

    @property
    def capacity(self) -> int:
        return self.budget.max_items

    def prepare(self, voice: LoadedVoice) -> None:
        if self._prepare is not None:
            self._prepare(voice)

    def admit(self, voice: LoadedVoice, chunk: Chunk) -> None:
        if chunk.stream and self.can_stream:
            self.windows.append(_Window(chunk, voice))
            return
        if not len(self.pending):
            self._since = time.monotonic()
        self.pending.push(chunk)
        self.voices[(chunk.request_id, chunk.seq)] = voice

    def wait_s(self, now: float) -> float:
        if self.windows:
            return 0.0
        if not len(self.pending):
            return math.inf
        if self.budget.max_items <= 1 or len(self.pending) >= self.budget.max_items:
            return 0.0
        return max(0.0, self.settings.batch_wait_s - (now - (self._since or now)))

    def drop(self, request_id: str) -> list[Chunk]:
        dropped = self.pending.drop(request_id)
        for chunk in dropped:
            self.voices.pop((chunk.request_id, chunk.seq), None)
        gone = [w for w in self.windows if w.chunk.request_id == request_id]
        self.windows = [w for w in self.windows if w.chunk.request_id != request_id]
        return dropped + [w.chunk for w in gone]

    def clear(self) -> list[Chunk]:
        ids = {c.request_id for c in self.pending} | {w.chunk.request_id for w in self.windows}
        return [chunk for request_id in ids for chunk in self.drop(request_id)]

    def expire(self, now: float) -> list[Chunk]:
        late = {c.request_id for c in self.pending if c.deadline < now}
        late |= {w.chunk.request_id for w in self.windows if w.chunk.deadline < now}
        return [chunk for request_id in late for chunk in self.drop(request_id)]

    def step(self, now: float) -> StepResult:
        """The chunk that should go first, by the queue's priority: a window of a streamed
        chunk, or a batch led by the best pending chunk."""
        head = self.pending.peek()
        if self.windows and (head is None or chunk_priority(self.windows[0].chunk) <= chunk_priority(head)):
            return self._window_step()
        result = StepResult()
        first = self.pending.pop()
        if first is None:
            return result
        batch = take_batch(first, self.pending, self.budget, now)
        self._since = time.monotonic() if len(self.pending) else None
        voice = self.voices[(first.request_id, first.seq)]
        for chunk in batch:
            self.voices.pop((chunk.request_id, chunk.seq), None)
        self._run_batch(voice, batch, result)
        return result

    def _run_batch(self, voice: LoadedVoice, batch: list[Chunk], result: StepResult) -> None:
        started = time.monotonic()
        try:
            if self.word_timer is None:
                outs = [(audio, None) for audio in self.engine.synthesize(voice, [self.make_item(c) for c in batch])]
            else:
                outs = self.engine.synthesize_timed(voice, [self.make_item(c) for c in batch])
        except EngineError as exc:
            result.failed += [(c, "engine_error", str(exc)) for c in batch]
            return
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Out of memory: halve the budget and run the halves; one chunk alone that
            # still does not fit goes back to the frontend to try elsewhere.
            self.budget.shrink()
            result.oom_events += 1
            if len(batch) == 1:
                result.failed.append((batch[0], "no_memory", f"out of memory synthesizing one chunk: {exc}"))
                return
            half = len(batch) // 2
            self._run_batch(voice, batch[:half], result)
            self._run_batch(voice, batch[half:], result)
            return
        if self.level is not None:
            outs = [(self.level(voice, audio), durations) for audio, durations in outs]
        synth_s = time.monotonic() - started
        result.batch = max(result.batch, len(batch))
        rate = voice.spec.sample_rate
        result.pieces += [Piece(c, audio, rate, 0, True, synth_s, started - c.submitted_at,
                                self._words(c, durations, len(audio)))
                          for c, (audio, durations) in zip(batch, outs)]

    def _words(self, chunk: Chunk, durations: np.ndarray | None, total: int) -> list:
        return [] if self.word_timer is None else self.word_timer(chunk, durations, total)

    def _window_step(self) -> StepResult:
        """One window of the first streamed chunk. The engine marks its last window, which
        then ends the chunk; where it cannot tell, an empty last part follows its stream."""
        result = StepResult()
        window = self.windows[0]
        if window.pieces is None:
            window.started = time.monotonic()
            window.pieces = self.engine.synthesize_stream_timed(window.voice, self.make_item(window.chunk),
                                                                self.settings.stream_frames)
        try:
            piece = next(window.pieces, None)
        except EngineError as exc:
            self.windows.pop(0)
            result.failed.append((window.chunk, "engine_error", str(exc)))
            return result
        audio = np.zeros(0, np.float32) if piece is None else piece.audio
        last = piece is None or piece.last
        if last:
            self.windows.pop(0)
        if len(audio) and self.level is not None:
            audio = self.level(window.voice, audio)
        chunk = window.chunk
        window.samples += len(audio)
        words = []
        if piece is not None and piece.per_id is not None and window.part == 0:
            words, window.timed = self._words(chunk, piece.per_id, int(round(float(np.sum(piece.per_id))))), True
        elif last and not window.timed:
            words = self._words(chunk, None, window.samples)
        result.batch = 1
        result.pieces.append(Piece(chunk, audio, window.voice.spec.sample_rate, window.part, last,
                                   time.monotonic() - window.started, window.started - chunk.submitted_at, words))
        window.part += 1
        return result

    def stats(self) -> dict[str, Any]:
        return {"batch_budget": self.budget.phonemes, "queued": len(self.pending)}
