"""GPT-SoVITS chunks served with continuous batching and windowed audio.

The worker owns one `StreamRunner` per GPT-SoVITS engine. Between polls it admits
queued chunks (`admit`, while the running batch has room), runs one decoding step
(`step`), and sends the audio pieces the step made ready as ChunkAudio parts; a dropped
request leaves the batch before the next step (`drop`). Out of memory evicts the newest
sequence back to the caller's queue and lowers the batch limit instead of failing a
request; an evicted chunk restarts from its seed, so its tokens are the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxpipe.stages.engines.base import EngineError, LoadedVoice, is_out_of_memory
from voxpipe.stages.engines.gpt_sovits.item import GsvItem
from voxpipe.stages.engines.gpt_sovits import features
from voxpipe.stages.engines.gpt_sovits.continuous import ContinuousDecoder, Sequence, sequence_for
from voxpipe.stages.engines.gpt_sovits.t2s import Sampling
from voxpipe.stages.engines.gpt_sovits.windowed import WindowedRenderer, WindowPlan


@dataclass
class Stream:
    chunk: Any  # the worker's Chunk
    seq: Sequence
    renderer: WindowedRenderer
    admitted_at: float
    parts_sent: int = 0


@dataclass
class Piece:
    chunk: Any
    audio: np.ndarray
    part: int
    last: bool
    synth_s: float  # since the chunk joined the batch
    queued_s: float  # from submission to joining the batch


@dataclass
class StepResult:
    pieces: list[Piece] = field(default_factory=list)
    failed: list[tuple[Any, str]] = field(default_factory=list)  # (chunk, message): engine errors
    evicted: list[Any] = field(default_factory=list)  # chunks to queue again (out of memory)


class StreamRunner:
    def __init__(self, max_sequences: int, plan: WindowPlan = WindowPlan()) -> None:
        self.decoder = ContinuousDecoder(max_sequences)
        self.plan = plan
        self.streams: dict[tuple[str, int], Stream] = {}
        self.oom_events = 0

    def __len__(self) -> int:
        return len(self.streams)

    def has_room(self) -> bool:
        return self.decoder.has_room()

    def admit(self, voice: LoadedVoice, chunk: Any, item: GsvItem) -> None:
        """Start decoding a chunk; it joins the batch at the next step. EngineError on bad input."""
        from voxpipe.stages.engines.gpt_sovits.engine import item_segments

        model = voice.model
        key = (chunk.request_id, chunk.seq)
        segs = item_segments(item)
        sampling = Sampling(item.top_k, item.top_p, item.temperature, item.repetition_penalty)
        try:
            seq = sequence_for(model, key, chunk.request_id, segs, sampling, item.seed)
        except features.FeatureError as exc:
            raise EngineError(f"voice {voice.spec.name!r}: {exc}") from None
        ids = [i for s in segs for i in s.phone_ids]
        if hasattr(model, "decoder"):  # v3/v4: CFM mel decoder + vocoder, audio per mel chunk
            from voxpipe.stages.engines.gpt_sovits.voice_v3 import MelStreamRenderer

            renderer = MelStreamRenderer(model, ids, 1.0 / item.length_scale, item.sample_steps, item.seed)
        else:
            renderer = WindowedRenderer(model, ids, item.noise_scale, 1.0 / item.length_scale, item.seed, self.plan)
        self.decoder.add(seq)
        self.streams[key] = Stream(chunk, seq, renderer, time.monotonic())

    def drop(self, request_id: str) -> list[Any]:
        """Take a request out of the batch (its caches freed); -> its chunks."""
        self.decoder.remove(request_id)
        gone = [k for k in self.streams if k[0] == request_id]
        return [self.streams.pop(k).chunk for k in gone]

    def expire(self, now: float) -> list[Any]:
        """Drop the requests with a chunk past its deadline; -> their chunks."""
        late = {s.chunk.request_id for s in self.streams.values() if s.chunk.deadline < now}
        return [chunk for request_id in late for chunk in self.drop(request_id)]

    def step(self) -> StepResult:
        result = StepResult()
        try:
            events = self.decoder.step()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            self.oom_events += 1
            seq = self.decoder.evict_newest()
            if seq is not None:
                result.evicted.append(self.streams.pop(seq.key).chunk)
            self.decoder.max_sequences = max(1, len(self.decoder))
            return result
        finished = {e.seq.key for e in events if e.finished}
        for key in {e.seq.key for e in events}:
            stream = self.streams.get(key)
            if stream is None:
                continue
            last = key in finished
            try:
                pieces = stream.renderer.push(stream.seq.tokens, last)
            except features.FeatureError as exc:
                self.decoder.remove(key[0])
                self.streams.pop(key)
                result.failed.append((stream.chunk, str(exc)))
                continue
            # A shared-memory slot needs at least one sample.
            pieces = [p if len(p) else np.zeros(1, np.float32) for p in pieces]
            if last and not pieces:
                pieces = [np.zeros(1, np.float32)]
            for i, audio in enumerate(pieces):
                final = last and i == len(pieces) - 1
                result.pieces.append(Piece(stream.chunk, audio, stream.parts_sent, final,
                                           time.monotonic() - stream.admitted_at,
                                           stream.admitted_at - stream.chunk.submitted_at))
                stream.parts_sent += 1
            if last:
                self.streams.pop(key)
        return result
