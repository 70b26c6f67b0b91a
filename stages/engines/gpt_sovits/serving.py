"""GPT-SoVITS chunks served with continuous batching and windowed audio.

The worker owns one `StreamRunner` per GPT-SoVITS engine. Between polls it admits
queued chunks (`admit`, while the running batch has room), runs one decoding step
(`step`), and sends the audio pieces the step made ready as ChunkAudio parts; a dropped
request leaves the batch before the next step (`drop`). Out of memory evicts the newest
sequence back to the caller's queue and lowers the batch limit instead of failing a
request; an evicted chunk restarts from its seed, so its tokens are the same.

v2 voices' audio comes in windows while tokens arrive (windowed.py). A v3/v4 text's mel
decoding starts when its tokens are complete and goes one CFM chunk per step, the chunks
of several texts of one voice in one call (`mel_batch`), interleaved with the decoding
steps of the texts still producing tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxpipe.stages.engines.base import EngineError, LoadedVoice, is_out_of_memory
from voxpipe.stages.engines.gpt_sovits.item import GsvItem
from voxpipe.stages.engines.gpt_sovits import features
from voxpipe.stages.engines.gpt_sovits.continuous import ContinuousDecoder, DecoderFull, Sequence, sequence_for
from voxpipe.stages.engines.gpt_sovits.voice import batch_text_inputs
from voxpipe.stages.engines.gpt_sovits.t2s import Sampling
from voxpipe.stages.engines.gpt_sovits.voice_v3 import MelStreamRenderer
from voxpipe.stages.engines.gpt_sovits.windowed import Window, WindowedRenderer, WindowPlan, render_windows


@dataclass
class Stream:
    chunk: Any  # the worker's Chunk
    seq: Sequence | None  # None while it waits for the next step's BERT pass
    renderer: WindowedRenderer | MelStreamRenderer
    admitted_at: float
    parts_sent: int = 0


@dataclass
class _Admitted:
    """A chunk admitted since the last step: its sequence is made in the step's BERT pass."""

    voice: LoadedVoice
    key: tuple[str, int]
    segments: list
    sampling: Sampling
    seed: int | None
    early_stop: int | None


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
    def __init__(self, max_sequences: int, plan: WindowPlan = WindowPlan(), mel_batch: int | None = None,
                 window_batch: int | None = None) -> None:
        self.decoder = ContinuousDecoder(max_sequences)
        self.plan = plan
        self.mel_batch = mel_batch or default_batch()  # v3/v4 texts per CFM call
        self.window_batch = window_batch or default_batch()  # v2 windows per SoVITS call
        self.streams: dict[tuple[str, int], Stream] = {}
        self.admitted: list[_Admitted] = []  # join the decoder at the next step
        self.oom_events = 0

    def __len__(self) -> int:
        return len(self.streams)

    def has_room(self) -> bool:
        return len(self.decoder) + len(self.admitted) < self.decoder.max_sequences

    def admit(self, voice: LoadedVoice, chunk: Any, item: GsvItem, max_tokens: int | None = None) -> None:
        """Start decoding a chunk; it joins the batch at the next step. EngineError on bad
        input. `max_tokens` caps its semantic tokens (default: the GPT's max_sec)."""
        from voxpipe.stages.engines.gpt_sovits.engine import item_segments

        model = voice.model
        key = (chunk.request_id, chunk.seq)
        if not self.has_room():
            raise DecoderFull(f"{len(self)} sequences admitted (limit {self.decoder.max_sequences})")
        if key in self.streams:
            raise ValueError(f"chunk {key!r} is already admitted")
        segs = item_segments(item)
        sampling = Sampling(item.top_k, item.top_p, item.temperature, item.repetition_penalty)
        ids = [i for s in segs for i in s.phone_ids]
        if hasattr(model, "decoder"):  # v3/v4: CFM mel decoder + vocoder, audio per mel chunk
            renderer = MelStreamRenderer(model, ids, 1.0 / item.length_scale, item.sample_steps, item.seed)
        else:
            renderer = WindowedRenderer(model, ids, item.noise_scale, 1.0 / item.length_scale, item.seed, self.plan)
        # BERT runs at the next step, in one pass for every chunk admitted until then.
        self.admitted.append(_Admitted(voice, key, segs, sampling, item.seed, max_tokens))
        self.streams[key] = Stream(chunk, None, renderer, time.monotonic())

    def _join_admitted(self, result: StepResult) -> None:
        """The BERT features of the chunks admitted since the last step, in one pass; then
        they join the decoder."""
        admitted, self.admitted = self.admitted, []
        try:
            inputs = batch_text_inputs([(a.voice.model, a.segments) for a in admitted])
        except Exception as exc:
            if is_out_of_memory(exc):  # they wait in the caller's queue again
                self.oom_events += 1
                result.evicted.extend(self.streams.pop(a.key).chunk for a in admitted)
                return
            if not isinstance(exc, features.FeatureError):
                raise
            for a in admitted:
                result.failed.append((self.streams.pop(a.key).chunk, f"voice {a.voice.spec.name!r}: {exc}"))
            return
        for a, text in zip(admitted, inputs):
            seq = sequence_for(a.voice.model, a.key, a.key[0], a.segments, a.sampling, a.seed, a.early_stop, text)
            self.decoder.add(seq)
            self.streams[a.key].seq = seq

    def drop(self, request_id: str) -> list[Any]:
        """Take a request out of the batch (its caches freed); -> its chunks."""
        self.decoder.remove(request_id)
        self.admitted = [a for a in self.admitted if a.key[0] != request_id]
        gone = [k for k in self.streams if k[0] == request_id]
        return [self.streams.pop(k).chunk for k in gone]

    def expire(self, now: float) -> list[Any]:
        """Drop the requests with a chunk past its deadline; -> their chunks."""
        late = {s.chunk.request_id for s in self.streams.values() if s.chunk.deadline < now}
        return [chunk for request_id in late for chunk in self.drop(request_id)]

    def step(self) -> StepResult:
        """One decoding step of every running sequence, then one CFM chunk of each v3/v4
        text whose tokens are complete; -> the audio pieces that made ready."""
        result = StepResult()
        if self.admitted:
            self._join_admitted(result)
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
        due: dict[tuple[str, int], list[Window]] = {}  # v2 windows, rendered together below
        for key in dict.fromkeys(e.seq.key for e in events):
            stream = self.streams.get(key)
            if stream is None:
                continue
            renderer = stream.renderer
            if isinstance(renderer, WindowedRenderer) and renderer.windowed:
                due[key] = renderer.due(stream.seq.tokens, key in finished)
                continue
            try:
                pieces = renderer.push(stream.seq.tokens, key in finished)
            except features.FeatureError as exc:
                self._fail(result, key, str(exc))
                continue
            # A v3/v4 text ends when its last mel chunk is rendered (`_render_mels`).
            self._emit(result, key, pieces, key in finished and not renderer.rendering)
        self._render_windows(result, due, finished)
        self._render_mels(result)
        return result

    def _render_windows(self, result: StepResult, due: dict[tuple[str, int], list[Window]],
                        finished: set[tuple[str, int]]) -> None:
        """The v2 windows this step made ready, several per SoVITS call (`window_batch`)."""
        windows = [w for ws in due.values() for w in ws]
        try:
            audio = render_windows(windows, self.window_batch)
        except Exception as exc:
            if not (is_out_of_memory(exc) and self.window_batch > 1):
                raise
            self.oom_events += 1  # one at a time for this step, smaller calls from now on
            self.window_batch = max(1, self.window_batch // 2)
            audio = render_windows(windows, 1)
        pieces = iter(audio)
        for key, ws in due.items():
            self._emit(result, key, [next(pieces) for _ in ws], key in finished)

    def _render_mels(self, result: StepResult) -> None:
        """One CFM chunk for each v3/v4 text whose tokens are complete, the texts of one
        voice and step count in calls of up to `mel_batch`; the texts with the fewest
        pieces out go first, so every request's first audio comes before anyone's second."""
        groups: dict[tuple[int, int], list[tuple[tuple[str, int], Stream]]] = {}
        for key, stream in self.streams.items():
            if stream.renderer.rendering:
                groups.setdefault((id(stream.renderer.decoder), stream.renderer.job.steps), []).append((key, stream))
        for members in groups.values():
            members = sorted(members, key=lambda m: m[1].parts_sent)[:self.mel_batch]
            try:
                mels = members[0][1].renderer.decoder.next_mels([s.renderer.job for _, s in members])
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self.oom_events += 1  # these start over from the caller's queue; smaller calls from now on
                self.mel_batch = max(1, len(members) // 2)
                result.evicted.extend(self.streams.pop(key).chunk for key, _ in members)
                continue
            for (key, stream), mel_chunk in zip(members, mels):
                self._emit(result, key, stream.renderer.take(mel_chunk), not stream.renderer.rendering)

    def _emit(self, result: StepResult, key: tuple[str, int], pieces: list[np.ndarray], last: bool) -> None:
        stream = self.streams[key]
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

    def _fail(self, result: StepResult, key: tuple[str, int], message: str) -> None:
        self.decoder.remove(key[0])
        result.failed.append((self.streams.pop(key).chunk, message))


def default_batch() -> int:
    """Texts per CFM call (v3/v4) and windows per SoVITS call (v2): several where a GPU runs
    them (one pass serves them all); on a CPU one: there both are compute-bound at batch 1
    already (batched CFM chunks measured 1.1-1.2x, batched windows below 1.1x), and every
    text in a call waits for all of them (docs/gpt-sovits-serving.md)."""
    import torch

    return 8 if torch.cuda.is_available() else 1
