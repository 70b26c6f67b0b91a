"""GPT-SoVITS chunks served with continuous batching and windowed audio: the family's
`Runner` (stages/families/base.py).

The worker admits chunks while the running batch has room (`admit`), then calls `step`:
one decoding step of every running sequence, after which the audio that became ready
goes out as pieces. A dropped request leaves the batch before the next step (`drop`). Out
of memory evicts the newest sequence back to the worker's queue and lowers the batch
limit instead of failing a request; an evicted chunk restarts from its seed, so its tokens
are the same.

v1-v2ProPlus voices' audio comes in windows while tokens arrive (models/windowed.py). A
window that falls due waits in its stream's queue; each step renders up to `window_batch`
of them (one SoVITS call), most urgent first: the first window of a request with no audio
yet, oldest first, then the window whose stream runs out of audio soonest. A window costs
as much as several decoding steps on a CPU, so rendering every window that fell due
before the next step would hold back every other request's decoding and, with one piece
sent only after all of them, the first audio of all of them. Likewise each step prefills
at most `prefills_per_step` joining texts (a CPU's default: one), so a burst of
arrivals does not stop the texts already decoding. A v3/v4 text's mel decoding starts
when its tokens are complete and goes one CFM chunk per step, the chunks of several texts
of one voice in one call (`mel_batch`), interleaved with the decoding steps of the texts
still producing tokens.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import numpy as np

from voxpipe.ipc.messages import Chunk
from voxpipe.stages.engines.base import EngineError, LoadedVoice, is_out_of_memory
from voxpipe.stages.families.base import Piece, Runner, StepResult
from voxpipe.stages.families.gpt_sovits.conditioning import ConditioningCache
from voxpipe.stages.families.gpt_sovits.decoder.continuous import ContinuousDecoder, DecoderFull, Sequence, sequence_for
from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling
from voxpipe.stages.families.gpt_sovits.engine import fit_to_version, item_segments
from voxpipe.stages.families.gpt_sovits.item import gsv_item
from voxpipe.stages.families.gpt_sovits.models import features
from voxpipe.stages.families.gpt_sovits.models.voice import batch_text_inputs
from voxpipe.stages.families.gpt_sovits.models.voice_v3 import MelStreamRenderer
from voxpipe.stages.families.gpt_sovits.models.windowed import Window, WindowedRenderer, WindowPlan, render_windows
from voxpipe.stages.families.gpt_sovits.words import gsv_chunk_words

Key = tuple[str, int]  # (request id, chunk seq)


@dataclass
class Stream:
    """A chunk in the runner, from admission to its last piece."""

    chunk: Chunk
    sample_rate: int
    seq: Sequence | None  # None while it waits for the next step's BERT pass
    renderer: WindowedRenderer | MelStreamRenderer
    admitted_at: float
    parts_sent: int = 0
    samples_sent: int = 0  # for its words, timed over its whole audio
    pending: list[Window] = field(default_factory=list)  # due windows not rendered yet, in order
    decoded: bool = False  # its tokens are complete: the last pending window is its last piece
    first_piece_at: float = 0.0  # when its first piece went out (monotonic)

    def urgency(self) -> tuple[int, float]:
        """Sort key of its next window, smallest first: a request's first audio (its first
        chunk with nothing sent), oldest first; then when the audio sent so far has played
        (a later chunk of a request: from when it was admitted)."""
        if self.parts_sent == 0:
            return (0, self.admitted_at) if self.chunk.seq == 0 else (1, self.admitted_at)
        return 1, self.first_piece_at + self.samples_sent / self.sample_rate


@dataclass
class _Admitted:
    """A chunk admitted since the last step: its sequence is made in the step's BERT pass."""

    voice: LoadedVoice
    model: object  # the voice's model, speaking from the request's own reference clip if it brought one
    key: Key
    segments: list
    sampling: Sampling
    seed: int | None
    early_stop: int | None


class GsvRunner(Runner):
    def __init__(self, max_sequences: int, plan: WindowPlan = WindowPlan(), mel_batch: int | None = None,
                 window_batch: int | None = None, prefills_per_step: int | None = -1,
                 compute: Callable[[], ContextManager[None]] = contextlib.nullcontext,
                 deciding: Callable[[], ContextManager[None]] = contextlib.nullcontext,
                 conditioning: ConditioningCache | None = None) -> None:
        self.decoder = ContinuousDecoder(max_sequences)
        # Requests' own reference clips: their prompts, computed once (conditioning.py).
        self.conditioning = conditioning if conditioning is not None else ConditioningCache(256 * 2**20)
        self.compute = compute  # wraps each step: the engine's threads for it (GptSovitsEngine.compute)
        # Wraps what decides tokens (BERT, reference prompts, decoding): a fixed thread count,
        # so a chunk's tokens do not follow the machine's load; rendering stays elastic.
        self.deciding = deciding
        self.plan = plan
        self.mel_batch = mel_batch or default_batch()  # v3/v4 texts per CFM call
        self.window_batch = window_batch or default_batch()  # v1-v2ProPlus windows per SoVITS call, one call a step
        # Joining texts prefilled per step (None: all); -1: the machine's default.
        self.prefills_per_step = default_prefills() if prefills_per_step == -1 else prefills_per_step
        self.streams: dict[Key, Stream] = {}
        self.admitted: list[_Admitted] = []  # join the decoder at the next step

    def __len__(self) -> int:
        return len(self.streams)

    def has_room(self) -> bool:
        # Every text until its last piece, not only those decoding: on a CPU the renderer
        # is the slower half, and texts whose tokens are done but whose windows still wait
        # would otherwise make room for new ones, whose first windows go ahead of theirs.
        return len(self.streams) < self.decoder.max_sequences

    @property
    def capacity(self) -> int:
        return self.decoder.max_sequences

    def wait_s(self, now: float) -> float:
        return 0.0 if self.streams else math.inf

    def admit(self, voice: LoadedVoice, chunk: Chunk, max_tokens: int | None = None) -> None:
        """Start decoding a chunk; it joins the batch at the next step. EngineError on bad
        input. `max_tokens` caps its semantic tokens (default: the voice's
        max_tokens_per_phone, else the GPT's max_sec)."""
        key = (chunk.request_id, chunk.seq)
        if not self.has_room():
            raise DecoderFull(f"{len(self)} sequences admitted (limit {self.decoder.max_sequences})")
        if key in self.streams:
            raise ValueError(f"chunk {key!r} is already admitted")
        item = gsv_item(chunk)
        segs = fit_to_version(item_segments(item), getattr(voice.model, "version", None))
        sampling = Sampling(item.top_k, item.top_p, item.temperature, item.repetition_penalty)
        ids = [i for s in segs for i in s.phone_ids]
        per_phone = getattr(getattr(voice.spec, "settings", None), "max_tokens_per_phone", 0.0)
        if max_tokens is None and per_phone > 0:
            max_tokens = max(1, round(per_phone * len(ids)))
        with self.deciding():
            model = self._model(voice, chunk)
        if hasattr(model, "decoder"):  # v3/v4: CFM mel decoder + vocoder, audio per mel chunk
            renderer = MelStreamRenderer(model, ids, 1.0 / item.length_scale, item.sample_steps, item.seed)
        else:
            renderer = WindowedRenderer(model, ids, item.noise_scale, 1.0 / item.length_scale, item.seed, self.plan)
        # BERT runs at the next step, in one pass for every chunk admitted until then.
        self.admitted.append(_Admitted(voice, model, key, segs, sampling, item.seed, max_tokens))
        self.streams[key] = Stream(chunk, voice.spec.sample_rate, None, renderer, time.monotonic())

    def _model(self, voice: LoadedVoice, chunk: Chunk):
        """The model that speaks a chunk: the voice's, from the request's own reference
        clip when it brought one (EngineError if that clip cannot be used)."""
        if chunk.reference is None:
            return voice.model
        try:
            return self.conditioning.model_for(voice, chunk.reference)
        except features.FeatureError as exc:
            raise EngineError(f"voice {voice.spec.name!r}: {exc}") from None
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise EngineError(f"voice {voice.spec.name!r}: the reference clip cannot be used "
                              f"({type(exc).__name__}: {exc})") from exc

    def stats(self) -> dict:
        return {"conditioning": self.conditioning.stats()}

    def drop(self, request_id: str) -> list[Chunk]:
        """Take a request out of the batch (its caches freed); -> its chunks."""
        self.decoder.remove(request_id)
        self.admitted = [a for a in self.admitted if a.key[0] != request_id]
        gone = [k for k in self.streams if k[0] == request_id]
        return [self.streams.pop(k).chunk for k in gone]

    def expire(self, now: float) -> list[Chunk]:
        late = {s.chunk.request_id for s in self.streams.values() if s.chunk.deadline < now}
        return [chunk for request_id in late for chunk in self.drop(request_id)]

    def clear(self) -> list[Chunk]:
        ids = {request_id for request_id, _ in self.streams}
        return [chunk for request_id in ids for chunk in self.drop(request_id)]

    def step(self, now: float = 0.0) -> StepResult:
        """One decoding step of every running sequence, then one CFM chunk of each v3/v4
        text whose tokens are complete; -> the audio pieces that became ready."""
        with self.compute():
            return self._step()

    def _step(self) -> StepResult:
        result = StepResult()
        if self.admitted:
            with self.deciding():
                self._join_admitted(result)
        try:
            with self.deciding():
                events = self.decoder.step(self.prefills_per_step)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            result.oom_events += 1
            seq = self.decoder.evict_newest()
            if seq is not None:
                result.requeue.append(self.streams.pop(seq.key).chunk)
            self.decoder.max_sequences = max(1, len(self.decoder))
            return result
        finished = {e.seq.key for e in events if e.finished}
        for key in dict.fromkeys(e.seq.key for e in events):
            stream = self.streams.get(key)
            if stream is None:
                continue
            renderer = stream.renderer
            if isinstance(renderer, WindowedRenderer) and renderer.windowed:
                stream.pending += renderer.due(stream.seq.tokens, key in finished)
                stream.decoded = key in finished
                continue
            try:
                pieces = renderer.push(stream.seq.tokens, key in finished)
            except features.FeatureError as exc:
                self._fail(result, key, str(exc))
                continue
            # A v3/v4 text ends when its last mel chunk is rendered (`_render_mels`).
            self._emit(result, key, pieces, key in finished and not renderer.rendering)
        self._render_windows(result)
        self._render_mels(result)
        result.batch = len(self.streams) + sum(p.last for p in result.pieces)  # the texts this step served
        return result

    def _join_admitted(self, result: StepResult) -> None:
        """The BERT features of the chunks admitted since the last step, in one pass; then
        they join the decoder."""
        admitted, self.admitted = self.admitted, []
        try:
            inputs = batch_text_inputs([(a.model, a.segments) for a in admitted])
        except Exception as exc:
            if is_out_of_memory(exc):  # they wait in the worker's queue again
                result.oom_events += 1
                result.requeue.extend(self.streams.pop(a.key).chunk for a in admitted)
                return
            if not isinstance(exc, features.FeatureError):
                raise
            for a in admitted:
                chunk = self.streams.pop(a.key).chunk
                result.failed.append((chunk, "engine_error", f"voice {a.voice.spec.name!r}: {exc}"))
            return
        for a, text in zip(admitted, inputs):
            seq = sequence_for(a.model, a.key, a.key[0], a.segments, a.sampling, a.seed, a.early_stop, text)
            self.decoder.add(seq)
            self.streams[a.key].seq = seq

    def _render_windows(self, result: StepResult) -> None:
        """Up to `window_batch` of the due v1-v2ProPlus windows in one SoVITS call, the most
        urgent first (`Stream.urgency`), at most one per stream; the rest wait for the next
        steps. A decoded stream with nothing left to render ends with an empty piece."""
        for key, stream in list(self.streams.items()):
            if stream.decoded and not stream.pending:
                self._emit(result, key, [], True)
        queued = sorted((s.urgency(), i, key) for i, (key, s) in enumerate(self.streams.items()) if s.pending)
        keys = [key for _, _, key in queued[:self.window_batch]]
        if not keys:
            return
        windows = [self.streams[key].pending.pop(0) for key in keys]
        try:
            audio = render_windows(windows, self.window_batch)
        except Exception as exc:
            if not (is_out_of_memory(exc) and self.window_batch > 1):
                raise
            result.oom_events += 1  # one at a time for this step, smaller calls from now on
            self.window_batch = max(1, self.window_batch // 2)
            audio = render_windows(windows, 1)
        for key, piece in zip(keys, audio):
            stream = self.streams[key]
            self._emit(result, key, [piece], stream.decoded and not stream.pending)

    def _render_mels(self, result: StepResult) -> None:
        """One CFM chunk for each v3/v4 text whose tokens are complete, the texts of one
        voice and step count in calls of up to `mel_batch`; the texts with the fewest
        pieces out go first, so every request's first audio comes before anyone's second."""
        groups: dict[tuple[int, int], list[tuple[Key, Stream]]] = {}
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
                result.oom_events += 1  # these start over from the worker's queue; smaller calls from now on
                self.mel_batch = max(1, len(members) // 2)
                result.requeue.extend(self.streams.pop(key).chunk for key, _ in members)
                continue
            for (key, stream), mel_chunk in zip(members, mels):
                self._emit(result, key, stream.renderer.take(mel_chunk), not stream.renderer.rendering)

    def _emit(self, result: StepResult, key: Key, pieces: list[np.ndarray], last: bool) -> None:
        stream = self.streams[key]
        if stream.parts_sent == 0 and pieces:
            stream.first_piece_at = time.monotonic()
        # A shared-memory slot needs at least one sample.
        pieces = [p if len(p) else np.zeros(1, np.float32) for p in pieces]
        if last and not pieces:
            pieces = [np.zeros(1, np.float32)]
        for i, audio in enumerate(pieces):
            final = last and i == len(pieces) - 1
            stream.samples_sent += len(audio)
            # GPT-SoVITS has no durations: words are timed over the chunk's whole audio.
            words = gsv_chunk_words(stream.chunk, stream.samples_sent) if final else []
            if final:
                audio = self._with_pause(stream, audio)
            result.pieces.append(Piece(stream.chunk, audio, stream.sample_rate, stream.parts_sent, final,
                                       time.monotonic() - stream.admitted_at,
                                       stream.admitted_at - stream.chunk.submitted_at, words))
            stream.parts_sent += 1
        if last:
            self.streams.pop(key)

    @staticmethod
    def _with_pause(stream: Stream, audio: np.ndarray) -> np.ndarray:
        """A chunk's last piece, followed by the request's `fragment_interval` of silence
        unless it is the request's last chunk (api_v2's pause between fragments)."""
        chunk = stream.chunk
        pause = float(chunk.inputs.options.get("fragment_interval") or 0.0)
        # The request's last chunk is the one that carries the total (count 0: more follow).
        if pause <= 0 or chunk.count and chunk.seq >= chunk.count - 1:
            return audio
        return np.concatenate([audio, np.zeros(round(pause * stream.sample_rate), np.float32)])

    def _fail(self, result: StepResult, key: Key, message: str) -> None:
        self.decoder.remove(key[0])
        result.failed.append((self.streams.pop(key).chunk, "engine_error", message))


def default_prefills() -> int | None:
    """Joining texts prefilled per step: all of them where a GPU runs them (a prefill
    there takes about a step), one on a CPU, where a full-size prefill costs as much as
    several batched steps (docs/gpt-sovits-serving.md)."""
    import torch

    return None if torch.cuda.is_available() else 1


def default_batch() -> int:
    """Texts per CFM call (v3/v4) and windows per SoVITS call (v1-v2ProPlus): several where
    a GPU runs them (one pass serves them all); on a CPU one: there both are compute-bound
    at batch 1 already (batched CFM chunks measured 1.1-1.2x, batched windows below 1.1x),
    and every text in a call waits for all of them (docs/gpt-sovits-serving.md)."""
    import torch

    return 8 if torch.cuda.is_available() else 1
