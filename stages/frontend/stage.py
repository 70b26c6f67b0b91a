"""Frontend: owns the client-facing socket. Validates requests, plans them into chunks,
hands chunks to workers through the scheduler, and relays the merger's fragments and
results back to each client. One loop, one handler per message type."""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar
from dataclasses import dataclass

import zmq

from voxpipe import __version__
from voxpipe.metrics import RecentWindow, recorder, request_log_line, voice_cache_summary
from voxpipe.ipc import codec, sockets
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (PROTOCOL_VERSION, Cancel, Chunk, ChunkDone, Drain, DropRequest, Error, Fragment,
                                  Hello, MergerLost, Ping, Pong, RequestFailed, Rescan, Result, StatusQuery,
                                  StatusReply, Stop, SupervisorReport, SynthesisRequest, TimelineEvent, Welcome,
                                  WorkerLost, WorkerState)
from voxpipe.ipc.shm import PoolError, ShmPool
from voxpipe.ipc.security import needs_curve, secure_server
from voxpipe.stages.frontend.client_peers import ClientPeers
from voxpipe.stages.frontend.planner import PlanError, Planner, PlanStream
from voxpipe.stages.references import ReferenceStore
from voxpipe.stages.frontend.request_state import ProgressError, RequestProgress
from voxpipe.stages.runtime import StageArgs, StageRuntime
from voxpipe.stages.frontend.scheduler import Scheduler
from voxpipe.stages.voices import VoiceCatalog, VoiceError

MAX_REQUEST_ID = 64
STOPPING = "the daemon is shutting down; try again later"
STOP_LINGER_MS = 2000  # how long the closing client socket may take to deliver the last answers
PLAN_SLICE_S = 0.005  # planning runs in slices this long between socket reads
BUSY_POLL_MS, IDLE_POLL_MS = 100, 1000  # the loop's longest sleep with requests open, and without
T = TypeVar("T")
MAX_LOGGED_VOICE = 80  # a refused request's voice name is the client's: log no more of it
MAX_QUICK_REFUSALS = 4096  # `busy` answers per turn without a full decode (each a few microseconds)


@dataclass
class Active:
    """A planned request: who asked, its limits, and its progress (positions and done
    chunks, for recovery), which changes only through RequestProgress's methods."""

    client: bytes
    voice: str
    chars: int
    deadline: float
    received: float
    stream: bool
    progress: RequestProgress
    first_audio: float | None = None
    timeline: list[TimelineEvent] | None = None  # with the timeline option: steps not yet sent on

    @property
    def seed(self) -> int | None:
        """The request's seed (its first chunk's: chunk n has seed + n)."""
        return self.progress.plan[0].seed

    @property
    def planned_at(self) -> float:
        """The plan the merger's messages must be of: a request resent after a frontend
        restart is a new plan, and the old plan's audio may still be on its way."""
        return self.progress.plan[0].submitted_at


class Frontend:
    def __init__(self, args: StageArgs, runtime: StageRuntime) -> None:
        cfg = self.config = args.config
        self.args, self.rt = args, runtime
        layout = args.layout
        self.catalog = VoiceCatalog(cfg.voices_path())
        self.planner = Planner(cfg, self.catalog, ReferenceStore(args.layout.run_dir / "references",
                                                                 cfg.http.max_reference_kib * 1024))
        self.scheduler = Scheduler(cfg.limits.max_queued_chunks)
        self.fragment_pool = ShmPool.attach(layout.pools[layout.MERGER_POOL])
        ctx = runtime.ctx
        self.clients = sockets.make_socket(ctx, zmq.ROUTER, max_message=sockets.CLIENT_MAX_MESSAGE_BYTES)
        if needs_curve(layout.client_endpoint):
            self.authenticator = secure_server(ctx, self.clients, Path(cfg.curve_keys_dir))
        self.clients.bind(layout.client_endpoint)
        self.peers = ClientPeers(self.clients)
        self.incarnation = uuid.uuid4().hex[:12]
        sockets.share_with_group(layout.client_endpoint, cfg.socket_group)
        self.workers = sockets.make_socket(ctx, zmq.ROUTER)
        self.workers.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker reuses its name
        self.workers.bind(layout.workers_endpoint)
        self.from_merger = sockets.make_socket(ctx, zmq.PULL)
        self.from_merger.bind(layout.frontend_in_endpoint)
        self.to_merger = sockets.make_socket(ctx, zmq.PUSH)
        self.to_merger.connect(layout.merger_endpoint)
        self.active: dict[str, Active] = {}
        self.admitted: dict[str, tuple[bytes, SynthesisRequest]] = {}  # let in, not yet planned
        self.planning: dict[str, PlanStream] = {}  # accepted, the rest of their text not yet planned
        self.report = SupervisorReport(False, False, [])
        self.draining = False
        self.running = True
        self.counts = {"accepted": 0, "completed": 0, "failed": 0, "rejected": 0, "bad_frames": 0}
        self.metrics = recorder()
        self.recent = RecentWindow(60.0)  # throughput and latency for `voxpipe status`
        self.voice_usage: dict[str, int] = {}  # accepted requests per voice, for preloading
        self.merger_generation = args.merger_generation  # merger restarts heard of (see ChunkDone)

    # ---- loop ------------------------------------------------------------------------------
    def run(self) -> None:
        poller = zmq.Poller()
        handlers = {self.clients: self._drain_clients, self.workers: self._drain_workers,
                    self.from_merger: self._drain_merger, self.rt.control: self._drain_control}
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        while self.running:
            for sock, _ in poller.poll(self._poll_ms()):
                handlers[sock]()
            self._plan_admitted()
            self._plan_ahead()
            self._forget_vanished_clients()
            self._dispatch()
            self._expire()
            self.rt.stats = self._stats()

    def _poll_ms(self) -> int:
        """No wait while there is planning to do; a short one while requests are open (their
        deadlines, vanished clients); long when idle, where any wakeup is waste: it costs a
        lone request's model call on a small machine (docs/benchmarks.md, "A quiet daemon")."""
        if self.admitted or self._can_plan_ahead():
            return 0
        return BUSY_POLL_MS if self.active or self.planning else IDLE_POLL_MS

    def _messages(self, sock: zmq.Socket, router: bool):
        for _ in range(256):  # bounded per turn so no socket starves the others
            try:
                yield sockets.recv(sock, router=router)
            except zmq.Again:
                return
            except ProtocolError:
                self.counts["bad_frames"] += 1

    # ---- clients ----------------------------------------------------------------------------
    def _plan_admitted(self, budget_s: float = PLAN_SLICE_S) -> None:
        """Plan admitted requests for one short slice of time. Admission is decided as
        messages arrive and planning (the costly part) happens in slices between socket
        reads, so a burst's `busy` answers never wait behind the planning of the
        requests that were let in."""
        started = time.perf_counter()
        while self.admitted and time.perf_counter() - started < budget_s:
            rid = next(iter(self.admitted))
            client, request = self.admitted.pop(rid)
            self._on_request(client, request)

    def _drain_clients(self) -> None:
        admitted = self.admitted
        self.peers.refresh()
        decoded = refused = 0
        # A bounded number of full decodes per turn, so no socket starves the others;
        # quick refusals while full cost a few microseconds and are bounded separately.
        while decoded < 256 and refused < MAX_QUICK_REFUSALS:
            try:
                parts = self.clients.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            client, body = parts[0].bytes, [p.bytes for p in parts[1:]]
            if body:
                self.peers.seen(client, parts[1])
            if len(body) == 1 and self._refused_while_full(client, body[0], admitted):
                refused += 1
                continue
            decoded += 1
            if len(body) != 1:
                self._reply_error(client, "", "bad_request", f"expected one message frame, got {len(body)}")
                continue
            try:
                message = codec.decode(body[0], expect=(Hello, SynthesisRequest, Cancel, StatusQuery, Ping))
            except ProtocolError as exc:
                self.counts["bad_frames"] += 1
                self._reply_error(client, "", "bad_request", str(exc))
                continue
            if isinstance(message, SynthesisRequest):
                refusal = self._admission_error(message, admitted)
                if refusal:
                    self._reply_error(client, message.request_id[:MAX_REQUEST_ID], *refusal, request=message)
                else:
                    admitted[message.request_id] = (client, message)
            elif isinstance(message, Cancel):
                cancelled = Error(message.request_id, "cancelled", "cancelled by the client")
                if admitted.pop(message.request_id, None) is not None:
                    self._send_client(client, cancelled)
                self._finish(message.request_id, cancelled)
            elif isinstance(message, Hello):
                self._on_hello(client, message)
            elif isinstance(message, StatusQuery):
                self._send_client(client, StatusReply(message.query_id, self.status()))
            elif isinstance(message, Ping):
                self._send_client(client, Pong(message.nonce, self.incarnation))

    def answer_all_stopping(self) -> None:
        """The daemon stops (drained, a drain that timed out, a restart budget spent, a
        fatal error): every request in flight, and every one that arrived meanwhile, gets
        the retriable `shutting_down` before the client socket closes, so no client waits
        out its timeout. Workers and the merger are not told: they are stopping too."""
        self.draining = True
        for rid, (client, _request) in list(self.admitted.items()):
            self._send_client(client, Error(rid, "shutting_down", STOPPING))
        self.admitted.clear()
        for rid, active in list(self.active.items()):
            del self.active[rid]
            answer = Error(rid, "shutting_down", STOPPING)
            self._record_end(rid, active, answer)
            self.counts["failed"] += 1
            self._send_client(active.client, answer)
        self._drain_clients()  # arrivals: refused while draining, anything else answered as usual
        for rid, (client, _request) in list(self.admitted.items()):
            self._send_client(client, Error(rid, "shutting_down", STOPPING))
        self.admitted.clear()
        self.clients.close(linger=STOP_LINGER_MS)

    def _full(self, admitted: dict) -> bool:
        return self.draining or len(self.active) + len(admitted) >= self.config.limits.max_active_requests

    def _refused_while_full(self, client: bytes, frame: bytes, admitted: dict) -> bool:
        """While full, answer a synthesis request `busy` from its id alone, before the full
        decode (which checks every field and costs far more): a burst's refusals then
        come back in microseconds. Whatever else the frame holds gets the usual path,
        so a malformed request may hear `busy` where it would hear `bad_request` when
        there is room: both are true, and retrying shows the second."""
        if not self._full(admitted):
            return False
        fields = codec.peek(frame, SynthesisRequest, ("request_id", "text", "voice"))
        if fields is None:
            return False
        rid = fields["request_id"]
        refusal = self._admission_error_for(rid, admitted) if isinstance(rid, str) else None
        if refusal is None or refusal[0] != "busy":
            return False  # bad ids and duplicates get their own answers
        self._reply_error(client, rid, *refusal, voice=fields["voice"], chars=fields["text"])
        return True

    def _on_hello(self, client: bytes, hello: Hello) -> None:
        if hello.protocol != PROTOCOL_VERSION:
            self._reply_error(client, "", "protocol_mismatch",
                              f"client speaks protocol {hello.protocol}, the daemon speaks {PROTOCOL_VERSION}")
        else:
            self._send_client(client, Welcome(PROTOCOL_VERSION, __version__, self.args.layout.run_id, self.incarnation))

    def _admission_error(self, request: SynthesisRequest, admitted: dict) -> tuple[str, str] | None:
        """The cheap checks, before any planning: (code, message) to refuse, or None."""
        return self._admission_error_for(request.request_id, admitted)

    def _admission_error_for(self, rid: str, admitted: dict) -> tuple[str, str] | None:
        if not rid or len(rid) > MAX_REQUEST_ID:
            return "bad_request", "request_id must be 1..64 characters"
        if rid in self.active or rid in admitted:
            return "duplicate", f"request {rid} is already being served"
        if self.draining:
            return "shutting_down", STOPPING
        if self._full(admitted):
            return "busy", f"{len(self.active) + len(admitted)} requests in progress; try again later"
        return None

    def _on_request(self, client: bytes, request: SynthesisRequest) -> None:
        """Plan a request up to its first chunk and send that on; the rest of its text is
        planned by `_plan_ahead`, while the first chunk is synthesized."""
        rid = request.request_id
        timeout = request.timeout_s if request.timeout_s and request.timeout_s > 0 else self.config.limits.request_timeout_s
        now = time.monotonic()
        deadline = now + min(timeout, self.config.limits.request_timeout_s)
        try:
            stream = self.planner.start(request, deadline)
            first: list[Chunk] = []
            while not first and not stream.done:
                first = stream.advance()
        except (VoiceError, PlanError) as exc:
            return self._reply_error(client, rid, exc.code, str(exc), request=request)
        self.metrics.stage_latency("plan", time.monotonic() - now)
        if not self.scheduler.has_room(len(first)):
            return self._reply_error(client, rid, "busy", "the synthesis queue is full; try again later",
                                     request=request)
        progress = RequestProgress(list(first), max(0, request.resume_samples))
        timeline = None
        if request.options.timeline:
            timeline = [TimelineEvent("frontend", "plan: first chunk", 0, now, time.monotonic())]
        self.active[rid] = Active(client, stream.spec.name, len(request.text), deadline, now, request.stream, progress,
                                  timeline=timeline)
        if not stream.done:
            self.planning[rid] = stream
        self.scheduler.submit(first)
        self.counts["accepted"] += 1
        self.voice_usage[stream.spec.name] = self.voice_usage.get(stream.spec.name, 0) + 1
        self._dispatch()

    def _may_plan(self, rid: str) -> bool:
        """Whether a request's plan may grow now: memory stays bounded by what is in
        flight, not by the text, so a request plans ahead only so many chunks."""
        active = self.active.get(rid)
        if active is None:
            return False
        ahead = self.config.frontend.plan_ahead_chunks
        if active.first_audio is None:
            # Before its first audio, plan only what the workers can start now: planning
            # further ahead would take CPU from the first window, and there is time for it
            # while that window's audio plays.
            ahead = min(ahead, max(1, len(self.scheduler.workers)) + 1)
        return active.progress.outstanding < ahead and self.scheduler.has_room(1)

    def _can_plan_ahead(self) -> bool:
        return any(self._may_plan(rid) for rid in self.planning)

    def _plan_ahead(self, budget_s: float = PLAN_SLICE_S) -> None:
        """Plan the rest of accepted requests' text, a slice of time per turn, oldest first."""
        started = time.perf_counter()
        for rid in list(self.planning):
            left = budget_s - (time.perf_counter() - started)
            if left <= 0:
                break
            self._plan_more(rid, self.planning[rid], left)
        self._dispatch()

    def _plan_more(self, rid: str, stream: PlanStream, budget_s: float) -> None:
        started = time.perf_counter()
        while self._may_plan(rid) and not stream.done and time.perf_counter() - started < budget_s:
            began = time.monotonic()
            try:
                chunks = stream.advance(budget_s - (time.perf_counter() - started))
                self.active[rid].progress.extend(chunks)
                if chunks and self.active[rid].timeline is not None:
                    self.active[rid].timeline.append(TimelineEvent(  # type: ignore[union-attr]
                        "frontend", f"plan: chunk {chunks[0].seq}", chunks[0].seq, began, time.monotonic()))
            except PlanError as exc:
                return self._finish(rid, Error(rid, exc.code, str(exc)))
            except ProgressError as exc:
                return self._finish(rid, Error(rid, "internal", f"inconsistent plan: {exc}"))
            self.scheduler.submit(chunks)
        active = self.active.get(rid)
        if active is None:
            self.planning.pop(rid, None)
        elif stream.done:
            del self.planning[rid]
            for chunk in active.progress.plan:  # the chunks not yet sent go with the total
                chunk.count = stream.made

    def _reply_error(self, client: bytes, request_id: str, code: str, message: str,
                     request: SynthesisRequest | None = None, voice: object = None, chars: object = None) -> None:
        """Refuse a request; its log line names the voice and the size it asked for (from
        `request`, or from the raw `voice` and `chars` (the text) of an undecoded one)."""
        self.counts["rejected"] += 1
        self.metrics.request_ended(code)
        if request is not None:
            voice, chars = request.voice, request.text
        if request_id:
            logged_voice = voice[:MAX_LOGGED_VOICE] if isinstance(voice, str) and voice else "-"
            logged_chars = len(chars) if isinstance(chars, str) else 0
            print(request_log_line(request_id, logged_voice, logged_chars, 0, None, None, code), file=sys.stderr,
                  flush=True)
        self._send_client(client, Error(request_id, code, message))

    def _send_client(self, client: bytes, message: object, *extra: bytes) -> bool:
        try:
            sockets.send(self.clients, message, *extra, identity=client, flags=zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError):
            return False  # unroutable (client gone) or its queue is full

    # ---- workers ----------------------------------------------------------------------------
    def _drain_workers(self) -> None:
        for identity, message, _ in self._messages(self.workers, router=True):
            worker = identity.decode(errors="replace")
            if isinstance(message, ChunkDone):
                self._on_chunk_done(worker, message)
            elif isinstance(message, WorkerState):
                self.scheduler.worker_state(worker, message.credits, message.voices, message.ready)

    def _on_chunk_done(self, worker: str, done: ChunkDone) -> None:
        chunk = self.scheduler.done(worker, done.request_id, done.seq)
        if chunk is None:
            # Not a chunk this frontend handed that worker: one of the plan a restarted
            # frontend made before (the resent request's plan may not reach that far yet).
            return
        active = self.active.get(done.request_id)
        if active is not None and done.ok and done.merger_generation < self.merger_generation:
            # Sent before its worker heard that the merger died (MergerLost reached this
            # frontend first): its audio may have gone, all or in part, to the dead merger,
            # and the restart's reruns did not count it done. Run it again; audio that did
            # reach the new merger makes the rerun a duplicate there. Not an attempt.
            self.scheduler.submit([chunk])
            return None
        if active is not None and done.ok:
            return self._advance(done.request_id, lambda: active.progress.chunk_done(done.seq, worker))
        if done.ok or chunk is None or active is None or done.code == "cancelled":
            return
        if done.code == "voice_unavailable":
            self.catalog.mark_unavailable(chunk.voice, done.message)
        attempts = self._advance(done.request_id, lambda: active.progress.chunk_failed(done.seq))
        if attempts is None:
            return
        if done.code in ("engine_error", "no_memory") and attempts < self.config.limits.max_chunk_attempts:
            self.scheduler.submit([chunk])  # another worker (or a fresh start) may succeed
        else:
            code = "retries_exhausted" if done.code in ("engine_error", "no_memory") else done.code
            self._finish(done.request_id, Error(done.request_id, code, done.message))

    def _dispatch(self) -> None:
        for worker, chunk in self.scheduler.dispatch():
            try:
                sockets.send(self.workers, chunk, identity=worker.encode(), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                # The worker vanished between its last message and now: put the chunk back.
                self.scheduler.done(worker, chunk.request_id, chunk.seq)
                self.scheduler.submit([chunk])
                self.scheduler.worker_lost(worker)

    # ---- merger ------------------------------------------------------------------------------
    def _drain_merger(self) -> None:
        for _, message, _ in self._messages(self.from_merger, router=False):
            if isinstance(message, Fragment):
                self._on_fragment(message)
            elif isinstance(message, Result):
                self._on_result(message)
            elif isinstance(message, RequestFailed) and self._of_current_plan(message):
                self._finish(message.request_id, Error(message.request_id, message.code, message.message))

    def _of_current_plan(self, message: Fragment | Result | RequestFailed) -> bool:
        active = self.active.get(message.request_id)
        return active is None or message.planned_at == active.planned_at

    def _on_fragment(self, fragment: Fragment) -> None:
        arrived = time.monotonic()
        active = self.active.get(fragment.request_id)
        current = self._of_current_plan(fragment)
        try:
            pcm = self.fragment_pool.read(fragment.handle) if fragment.handle else None
        except PoolError as exc:
            if not current:
                return
            return self._finish(fragment.request_id, Error(fragment.request_id, "internal", f"lost audio: {exc}"))
        if active is None or not current:
            return
        # After a merger restart (or for a resent request) the audio starts over from
        # the beginning: relay only what the client does not have yet.
        samples = 0 if pcm is None else len(pcm)
        relay = self._advance(fragment.request_id, lambda: active.progress.take_fragment(samples, fragment.chunks_done))
        if relay is None or pcm is None:
            return
        pcm = pcm[relay.skip:]
        if active.first_audio is None:
            active.first_audio = time.monotonic()
        # Replayed audio: the client has the words that end in what it already holds.
        held = active.progress.client_has - len(pcm)
        words = fragment.words if not relay.skip else [w for w in fragment.words if w.end > held]
        message = Fragment(fragment.request_id, relay.index, fragment.sample_rate, len(pcm), None,
                           fragment.chunks_done, fragment.chunks, words=words, seed=active.seed,
                           timeline=self._timeline(active, fragment.timeline, arrived))
        if not self._send_client(active.client, message, pcm.tobytes()):
            self._finish(fragment.request_id, None)  # the client is gone: stop working for it

    def _on_result(self, result: Result) -> None:
        active = self.active.get(result.request_id)
        if active is None or not self._of_current_plan(result):
            return
        result.planned_at = 0.0  # the daemon's own bookkeeping; the client has no use for it
        result.seed = active.seed
        now = time.monotonic()
        result.timings.update(first_audio_s=(active.first_audio or now) - active.received, total_s=now - active.received)
        result.samples, result.fragments = active.progress.client_has, active.progress.fragments_sent
        result.timeline = self._timeline(active, result.timeline, now) if active.timeline is not None else []
        self.counts["completed"] += 1
        self._finish(result.request_id, result, failed=False)

    @staticmethod
    def _timeline(active: Active, merged: list[TimelineEvent], arrived: float) -> list[TimelineEvent]:
        """The steps to send on with a fragment or the result: the frontend's own since the
        last one, the workers' and the merger's, and this relay (from the merger to the client)."""
        if active.timeline is None:
            return []
        events = active.timeline + merged + [TimelineEvent("frontend", "relay", -1, arrived, time.monotonic())]
        active.timeline = []
        return events

    # ---- supervisor ----------------------------------------------------------------------------
    def _drain_control(self) -> None:
        for _, message, _ in self._messages(self.rt.control, router=False):
            if isinstance(message, SupervisorReport):
                self.report = message
            else:
                self._on_control(message)

    def _on_control(self, control: object) -> None:
        if isinstance(control, WorkerLost):
            for chunk in self.scheduler.worker_lost(control.worker):
                self._retry(chunk, "its worker died")
            self._rerun_unmerged_chunks_of(control.worker)
        elif isinstance(control, MergerLost):
            self.merger_generation = max(self.merger_generation, control.generation)
            self._drain_merger()  # every fragment the old merger sent, first
            self.fragment_pool.reclaim_owner(control.pid, set())
            self._rerun_merged_chunks()
        elif isinstance(control, Drain):
            self.draining = True
        elif isinstance(control, Rescan):
            self.catalog.rescan()
        elif isinstance(control, Stop):
            self.running = False

    def _retry(self, chunk: Chunk, why: str) -> None:
        """Queue a chunk again, unless it has used up its attempts."""
        active = self.active.get(chunk.request_id)
        if active is None:
            return
        attempts = self._advance(chunk.request_id, lambda: active.progress.chunk_failed(chunk.seq))
        if attempts is None:
            return
        if attempts >= self.config.limits.max_chunk_attempts:
            self._finish(chunk.request_id, Error(chunk.request_id, "retries_exhausted",
                                                 f"chunk {chunk.seq} failed {attempts} times; last: {why}"))
        else:
            self.scheduler.submit([chunk])

    def _rerun_unmerged_chunks_of(self, worker: str) -> None:
        """A dead worker's ChunkDone can reach us while the audio message it sent the merger
        just before did not: run its done chunks that the merger has not yet taken in order
        again. Audio that did arrive makes the rerun a duplicate, which the merger drops.
        Not an attempt: these chunks succeeded once."""
        for active in list(self.active.values()):
            self.scheduler.submit(active.progress.rerun_unmerged_of(worker))

    def _rerun_merged_chunks(self) -> None:
        """The merger restarted and lost its state: the chunks whose audio it had taken
        in must run again; the audio clients already have is skipped when it comes back."""
        for active in list(self.active.values()):
            for chunk in active.progress.merger_restarted():
                self._retry(chunk, "the merger restarted")

    def _forget_vanished_clients(self) -> None:
        gone = self.peers.disconnected()
        if not gone:
            return
        for client in gone:
            # A descriptor can be reused by a new connection before its old one's event is
            # read: confirm by routing an unsolicited probe (Pong nonce 0) to the identity.
            if self._send_client(client, Pong(0, self.incarnation)):
                continue
            for rid in [rid for rid, a in self.active.items() if a.client == client]:
                self._finish(rid, None)

    # ---- request end -----------------------------------------------------------------------------
    def _finish(self, request_id: str, answer: Result | Error | None, failed: bool = True) -> None:
        self.planning.pop(request_id, None)
        active = self.active.pop(request_id, None)
        if active is None:
            return
        self._record_end(request_id, active, answer)
        if failed:
            self.counts["failed"] += 1
            for worker in self.scheduler.drop(request_id):
                sockets.send(self.workers, DropRequest(request_id, "request ended"), identity=worker.encode(),
                             flags=zmq.NOBLOCK)
            sockets.send(self.to_merger, DropRequest(request_id, "request ended"))
        if answer is not None:
            self._send_client(active.client, answer)

    def _record_end(self, request_id: str, active: Active, answer: Result | Error | None) -> None:
        """Metrics, the last-minute window and one log line for an accepted request."""
        total = time.monotonic() - active.received
        first = None if active.first_audio is None else active.first_audio - active.received
        outcome = "ok" if isinstance(answer, Result) else answer.code if answer is not None else "client_gone"
        audio_s = answer.samples / answer.sample_rate if isinstance(answer, Result) and answer.sample_rate else 0.0
        self.metrics.request_ended(outcome, total, first, audio_s, active.chars)
        self.recent.add(outcome == "ok", total, first, audio_s)
        print(request_log_line(request_id, active.voice, active.chars, active.progress.chunks, first, total, outcome),
              file=sys.stderr, flush=True)

    def _advance(self, request_id: str, step: Callable[[], T]) -> T | None:
        """Apply one change to a request's progress; one that would break its invariants
        (a message that cannot be right) fails that request, never the frontend."""
        try:
            return step()
        except ProgressError as exc:
            self._finish(request_id, Error(request_id, "internal", f"inconsistent progress: {exc}"))
            return None

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [rid for rid, a in self.active.items() if a.deadline < now]:
            self._finish(rid, Error(rid, "timeout", "the request's deadline passed"))

    def status(self) -> dict:
        live = self._stats()
        processes = self._processes(live)
        return {"ready": self.report.ready, "draining": self.draining or self.report.draining,
                "run_id": self.args.layout.run_id, "version": __version__, "processes": processes,
                "queues": self.scheduler.stats(), "active_requests": live["active"], "planning": len(self.planning),
                "voices": self.catalog.names(), "unavailable_voices": self.catalog.broken(),
                "counts": dict(self.counts), "last_minute": self.recent.summary(),
                "voice_cache": voice_cache_summary(processes),
                "conditioning_cache": voice_cache_summary(processes, "conditioning"), **self.report.info}

    def _processes(self, live: dict) -> list[dict]:
        """The supervisor's process list with this frontend's row made now: the row and the
        status's top-level counts come from the same figures, not one a heartbeat older."""
        rows = list(self.report.processes) or [{"role": "frontend", "name": "frontend", "pid": os.getpid()}]
        own = {**live, "stats_at": time.monotonic()}
        return [{**row, "stats": {**(row.get("stats") or {}), **own}} if row.get("pid") == os.getpid() else row
                for row in rows]

    def _stats(self) -> dict:
        return {"active": len(self.active) + len(self.admitted), "queued": len(self.scheduler.queue), **self.counts,
                "voice_usage": dict(self.voice_usage)}


def main(args: StageArgs) -> None:
    runtime = StageRuntime(args)
    frontend = Frontend(args, runtime)
    frontend.planner.warm_up(args.preload or [frontend.catalog.default_voice])
    runtime.ready = True
    try:
        frontend.run()
    finally:
        try:
            frontend.answer_all_stopping()
        finally:
            runtime.close()
