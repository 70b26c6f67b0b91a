"""Merger: reorders each request's chunk audio, joins chunks with an equal-power
crossfade and streams every contiguous prefix on to the frontend as a fragment."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from voxpipe.metrics import recorder
from voxpipe.ipc import sockets
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (ChunkAudio, DropRequest, Fragment, ProducerLost, RequestFailed, Reset, Result, Stop,
                                  TimelineEvent, WordSpan)
from voxpipe.ipc.shm import PoolError, PoolFull, ShmPool, StaleHandle
from voxpipe.stages.merger.crossfade import CrossfadeJoiner, to_pcm16
from voxpipe.stages.runtime import StageArgs, StageRuntime

BUSY_POLL_MS, IDLE_POLL_MS = 250, 1000  # the loop's longest sleep with requests open, and without
FINISHED_MEMORY = 4096  # finished request ids remembered, to ignore late duplicate chunks


@dataclass
class MergeState:
    count: int  # chunks in the request's plan; 0 until a chunk that knows it arrives
    sample_rate: int
    stream: bool
    deadline: float
    joiner: CrossfadeJoiner
    planned_at: float = 0.0  # the plan this audio is of (see ChunkAudio.planned_at)
    next_seq: int = 0
    pending: dict[tuple[int, int], ChunkAudio] = field(default_factory=dict)
    next_part: int = 0
    fragments: int = 0
    samples: int = 0
    synth_s: float = 0.0
    queued_s: float = 0.0
    merge_s: float = 0.0
    held: list[np.ndarray] = field(default_factory=list)  # non-streamed output so far
    carry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # streamed, held back
    chunk_start: int = 0  # where the current chunk's audio starts in the request's audio
    words: list[WordSpan] = field(default_factory=list)  # placed, not yet sent
    words_end: int = 0  # end of the last placed word: the next starts no earlier
    timeline: list[TimelineEvent] | None = None  # with the timeline option: steps not yet sent on

    def place_words(self, words: list[WordSpan]) -> None:
        """A chunk's words (samples of the chunk) into the request's audio, where the joiner
        put the chunk; kept in order and apart where a crossfade overlaps two chunks."""
        for word in words:
            start = max(self.chunk_start + word.start, self.words_end)
            end = max(self.chunk_start + word.end, start)
            self.words.append(WordSpan(word.text, start, end))
            self.words_end = end

    def take_words(self, upto: int | None) -> list[WordSpan]:
        """The placed words that end by `upto` samples (None: all of them)."""
        n = len(self.words) if upto is None else sum(1 for w in self.words if w.end <= upto)
        taken, self.words = self.words[:n], self.words[n:]
        return taken


class Merger:
    def __init__(self, args: StageArgs, runtime: StageRuntime) -> None:
        self.args, self.rt = args, runtime
        layout = args.layout
        self.crossfade_s = args.config.merger.crossfade_ms / 1000.0
        self.out_pool = ShmPool.attach(layout.pools[layout.MERGER_POOL], producer=True)
        self.in_pools = {name: ShmPool.attach(spec) for name, spec in layout.pools.items() if name != layout.MERGER_POOL}
        self.inbox = sockets.make_socket(runtime.ctx, zmq.PULL)
        self.inbox.bind(layout.merger_endpoint)
        self.frontend = sockets.make_socket(runtime.ctx, zmq.PUSH)
        self.frontend.connect(layout.frontend_in_endpoint)
        self.requests: dict[str, MergeState] = {}
        self.finished: dict[str, float] = {}  # request id -> the newest plan of it that ended
        self.running = True
        self.duplicates = 0
        self.metrics = recorder()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        poller.register(self.rt.control, zmq.POLLIN)
        while self.running:
            # Open requests have deadlines to watch; an idle merger sleeps until a message.
            events = dict(poller.poll(BUSY_POLL_MS if self.requests else IDLE_POLL_MS))
            for sock in (self.inbox, self.rt.control):
                if sock in events:
                    self._drain(sock)
            self._expire()
            self.rt.stats = {"requests": len(self.requests), "duplicates": self.duplicates,
                             "pool": self.out_pool.usage()}

    def _drain(self, sock: zmq.Socket) -> None:
        for _ in range(256):  # bounded, so the control socket is not starved
            try:
                _, message, _ = sockets.recv(sock)
            except zmq.Again:
                return
            except ProtocolError:
                continue
            if isinstance(message, ChunkAudio):
                self._on_audio(message)
            elif isinstance(message, DropRequest):
                self._drop(message.request_id)
            elif isinstance(message, Stop):
                self.running = False
            elif isinstance(message, ProducerLost):
                self._reclaim(message.pool, message.pid)
            elif isinstance(message, Reset):
                self._reset()

    def _reset(self) -> None:
        # A new frontend knows none of the requests in progress; their clients resend
        # them, and everything starts over clean.
        for request_id in list(self.requests):
            self._drop(request_id)
        self.finished.clear()
        # Fragments the old frontend never read: nobody will read them now.
        self.out_pool.reclaim_owner(os.getpid(), set())

    def _on_audio(self, msg: ChunkAudio) -> None:
        pool = self.in_pools.get(msg.handle.pool)
        state = self.requests.get(msg.request_id)
        if state is not None and msg.planned_at != state.planned_at:
            if msg.planned_at < state.planned_at:  # audio of an older plan, arriving late
                self.duplicates += 1
                self._release(pool, msg)
                return
            self._discard(msg.request_id)  # the request was planned again: start over with it
            state = None
        finished_plan = self.finished.get(msg.request_id)
        if state is None and (finished_plan is None or msg.planned_at > finished_plan):
            state = self.requests[msg.request_id] = MergeState(
                msg.count, msg.sample_rate, msg.stream, msg.deadline,
                CrossfadeJoiner(round(self.crossfade_s * msg.sample_rate)), msg.planned_at)
        if state is not None and msg.count:
            state.count = msg.count  # chunks sent before the plan was complete carry 0
        key = (msg.seq, msg.part)
        if pool is None or state is None or key in state.pending or (msg.seq, msg.part) < (state.next_seq, state.next_part):
            self.duplicates += 1  # a re-dispatched chunk whose first run did finish after all
            self._release(pool, msg)
            return
        if msg.part == 0:
            # A chunk's parts come in order from one run; parts of it already here came
            # from an earlier run (sent to a merger that died): this run replaces them.
            for stale in [k for k in state.pending if k[0] == msg.seq and k[1] > 0]:
                old = state.pending.pop(stale)
                self._release(self.in_pools.get(old.handle.pool), old)
        state.pending[key] = msg
        if msg.timeline:
            state.timeline = (state.timeline or []) + msg.timeline
        # Every chunk's audio passes here once (duplicates were turned away above): the
        # one place that sees the queue wait and engine time of all workers' chunks.
        if msg.part == 0:
            self.metrics.stage_latency("queue", msg.queued_s)
        self.metrics.stage_latency("synth", msg.synth_s)
        self._advance(msg.request_id, state)

    def _advance(self, request_id: str, state: MergeState) -> None:
        started = time.perf_counter()
        pieces = []
        while (state.next_seq, state.next_part) in state.pending:
            msg = state.pending.pop((state.next_seq, state.next_part))
            try:
                audio = self.in_pools[msg.handle.pool].read(msg.handle)
            except StaleHandle as exc:
                self._fail(request_id, "internal", f"lost audio of chunk {msg.seq}: {exc}")
                return
            first_of_chunk = msg.part == 0
            final = msg.last_part and msg.seq == state.count - 1  # count 0 (not known yet): not the last
            pieces.append(state.joiner.push(audio, crossfade=first_of_chunk and msg.seq > 0, final=final))
            if first_of_chunk:
                state.chunk_start = state.joiner.last_start
            state.place_words(msg.words)
            state.synth_s += msg.synth_s
            state.queued_s = max(state.queued_s, msg.queued_s)
            if msg.last_part:
                state.next_seq, state.next_part = state.next_seq + 1, 0
            else:
                state.next_part += 1
        done = state.next_seq == state.count > 0
        state.merge_s += time.perf_counter() - started
        if state.timeline is not None and pieces:
            now = time.monotonic()
            state.timeline.append(TimelineEvent("merger", "merge", -1, now - (time.perf_counter() - started), now))
        if state.stream:
            ready = np.concatenate([state.carry, *pieces])
            if not done:
                # One sample waits for the next fragment, so the last fragment always has
                # audio to carry the words that come with a chunk's last window (empty
                # where the engine could not tell its last).
                ready, state.carry = ready[:-1], ready[-1:]
            if len(ready) and not self._emit(request_id, state, ready):
                return
        else:
            state.held.extend(pieces)
            if done and not self._emit(request_id, state, np.concatenate(state.held)):
                return
        if done:
            self.metrics.stage_latency("merge", state.merge_s)
            result = Result(request_id, state.sample_rate, state.samples, state.fragments, state.count,
                            {"synth_s": state.synth_s, "queued_s": state.queued_s, "merge_s": state.merge_s},
                            words=state.take_words(None), planned_at=state.planned_at,  # words: any no fragment carried
                            timeline=state.timeline or [])
            sockets.send(self.frontend, result)
            self._forget(request_id, state.planned_at)

    def _emit(self, request_id: str, state: MergeState, audio: np.ndarray) -> bool:
        pcm = to_pcm16(audio)
        try:
            # The frontend frees slots as it reads them; wait for it within the deadline.
            handle = self.out_pool.put_waiting(pcm, state.deadline)
        except PoolFull as exc:
            self._fail(request_id, "no_memory", str(exc))
            return False
        state.samples += len(pcm)
        done = state.next_seq == state.count > 0
        sockets.send(self.frontend, Fragment(request_id, state.fragments, state.sample_rate, len(pcm), handle,
                                             state.next_seq, state.count, planned_at=state.planned_at,
                                             words=state.take_words(None if done else state.samples),
                                             timeline=state.timeline or []))
        if state.timeline is not None:
            state.timeline = []
        state.fragments += 1
        return True

    def _fail(self, request_id: str, code: str, message: str) -> None:
        state = self.requests.get(request_id)
        sockets.send(self.frontend, RequestFailed(request_id, code, message, state.planned_at if state else 0.0))
        self._drop(request_id)

    def _drop(self, request_id: str) -> None:
        had_state = request_id in self.requests
        planned_at = self._discard(request_id)
        self._forget(request_id, planned_at if had_state else math.inf)

    def _discard(self, request_id: str) -> float:
        """Free a request's pending audio and forget its state; -> the plan it was of."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return 0.0
        for msg in state.pending.values():
            self._release(self.in_pools.get(msg.handle.pool), msg)
        return state.planned_at

    def _forget(self, request_id: str, planned_at: float = math.inf) -> None:
        """Remember a request as finished: audio of this plan or an older one is turned away."""
        self.requests.pop(request_id, None)
        self.finished[request_id] = max(planned_at, self.finished.get(request_id) or 0.0)
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.pop(next(iter(self.finished)))

    def _release(self, pool: ShmPool | None, msg: ChunkAudio) -> None:
        if pool is not None:
            try:
                pool.release(msg.handle)
            except PoolError:
                pass

    def _reclaim(self, pool_name: str, pid: int) -> None:
        """A worker died: after taking in every message it managed to send, free the
        slots it left that no pending chunk refers to (their messages died with it)."""
        pool = self.in_pools.get(pool_name)
        if pool is None or pid <= 0:
            return
        while self.inbox.poll(0):
            self._drain(self.inbox)
        keep = {(m.handle.slot, m.handle.generation) for s in self.requests.values() for m in s.pending.values()
                if m.handle.pool == pool_name}
        pool.reclaim_owner(pid, keep)

    def _expire(self) -> None:
        now = time.monotonic()
        for request_id in [r for r, s in self.requests.items() if s.deadline < now]:
            self._drop(request_id)  # the frontend answers the client with `timeout`


def main(args: StageArgs) -> None:
    runtime = StageRuntime(args)
    merger = Merger(args, runtime)
    runtime.ready = True
    try:
        merger.run()
    finally:
        runtime.close()
