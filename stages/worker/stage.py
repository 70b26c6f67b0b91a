"""Synthesis worker: one per GPU, or N on CPU. Loop: take chunks from the frontend, hand
each to the runner of its voice's family (stages/worker/lanes.py), step the runners that
have work, put the audio they make ready in this worker's shared-memory pool and send
the handles to the merger."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import zmq

from voxpipe.ipc import sockets
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (Chunk, ChunkAudio, ChunkDone, DropRequest, MergerLost, Rescan, Reset, Stop,
                                  TimelineEvent, WorkerState)
from voxpipe.ipc.shm import PoolFull, ShmPool
from voxpipe.metrics import recorder
from voxpipe.stages.engines.base import EngineError, EngineSettings
from voxpipe.stages.families import FamilyError
from voxpipe.stages.families.base import Piece
from voxpipe.stages.runtime import StageArgs, StageRuntime
from voxpipe.stages.voices import VoiceCatalog, VoiceError
from voxpipe.stages.worker.chunk_queue import ChunkQueue
from voxpipe.stages.worker.lanes import Lane, Lanes

# With nothing queued the loop sleeps until a message comes: every wakeup of an idle stage
# costs a lone request's model call on a small machine (docs/benchmarks.md, "A quiet daemon").
IDLE_POLL_MS = 1000


def engine_settings(args: StageArgs) -> EngineSettings:
    cfg = args.config
    # Each engine reads the options it knows (torch the graphs, tensorrt its plans, onnx
    # int8, a family's engine its own worker keys): every [worker] key goes, but max_batch
    # only when set (0 leaves each engine its own).
    options: dict[str, object] = {k: v for k, v in dataclasses.asdict(cfg.worker).items() if k != "max_batch"}
    if cfg.worker.max_batch > 0:
        options["max_batch"] = cfg.worker.max_batch
    options.update(cuda_graphs=cfg.gpu.cuda_graphs, trt_max_frames=cfg.gpu.tensorrt_max_frames)
    for key, value in options.items():  # paths as the user wrote them, "~" expanded
        if key.endswith("_dir") and isinstance(value, str) and value:
            options[key] = str(Path(value).expanduser())
    if cfg.gpu.tensorrt_plan_dir:
        options["plan_dir"] = str(Path(cfg.gpu.tensorrt_plan_dir).expanduser())
    return EngineSettings(device=args.device, threads=cfg.worker.threads, precision=cfg.worker.precision,
                          options=options)


def piece_timeline(piece: Piece, step: tuple[float, float], put: float) -> list[TimelineEvent]:
    """The worker's steps for one piece: the wait for an engine (first part), the engine
    call that made it (a streamed chunk's first window includes its acoustic part), and
    the hand-off to the merger (shared memory and socket)."""
    chunk, events = piece.chunk, []
    if piece.part == 0:
        events.append(TimelineEvent("worker", "queue", chunk.seq, chunk.submitted_at,
                                    chunk.submitted_at + piece.queued_s))
    if len(piece.audio):
        what = ("engine (whole chunk)" if piece.last and piece.part == 0 else
                "engine: acoustic part + window 0" if piece.part == 0 else f"engine: window {piece.part}")
        events.append(TimelineEvent("worker", what, chunk.seq, *step))
    events.append(TimelineEvent("worker", "to the merger", chunk.seq, put, time.monotonic()))
    return events


class Worker:
    def __init__(self, args: StageArgs, runtime: StageRuntime) -> None:
        self.args, self.rt, self.name = args, runtime, args.name
        self.catalog = VoiceCatalog(args.config.voices_path())
        self.lanes = Lanes(args.config, engine_settings(args), self.catalog)
        self.lanes.resolve(self.catalog.default_voice)  # the default engine's lane exists from the start
        self.pool = ShmPool.attach(args.layout.pools[args.layout.worker_pool_name(self.name)], producer=True)
        self.frontend = sockets.make_socket(runtime.ctx, zmq.DEALER, identity=self.name.encode())
        self.frontend.connect(args.layout.workers_endpoint)
        self.merger = sockets.make_socket(runtime.ctx, zmq.PUSH)
        self.merger.connect(args.layout.merger_endpoint)
        self.queue = ChunkQueue()  # chunks no runner has taken yet
        self.merger_generation = args.merger_generation  # merger restarts heard of (see ChunkDone)
        self.chunks_done = 0
        self.batches = self.batch_items = self.last_batch_size = self.oom_events = 0
        self.engine_cpu_s = 0.0  # CPU time inside runner steps: the rest of the daemon's is overhead
        self.metrics = recorder()
        self.running = True

    def preload(self, names: list[str]) -> None:
        for name in names:
            try:
                spec, lane = self.lanes.resolve(name)
                self.lanes.loaded(lane, spec)
            except (VoiceError, EngineError, FamilyError) as exc:
                print(f"voxpipe worker {self.name}: cannot preload {name!r}: {exc}", flush=True)
            except Exception as exc:  # a broken voice must not keep the worker (and the others) down
                self.catalog.mark_unavailable(name, f"voice {name!r} failed to load: {type(exc).__name__}: {exc}")
                print(f"voxpipe worker {self.name}: cannot preload {name!r}: {type(exc).__name__}: {exc}", flush=True)

    def announce(self) -> None:
        # A batching runner needs enough chunks in hand to fill its batches.
        credits = max([self.args.config.worker.credits] + [lane.runner.capacity for lane in self.lanes])
        sockets.send(self.frontend, WorkerState(self.name, self.lanes.voice_names(), credits, self.rt.ready))

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.rt.control, zmq.POLLIN)
        while self.running:
            events = dict(poller.poll(self._poll_ms()))
            if self.frontend in events:
                self._drain(self.frontend)
            if self.rt.control in events:
                self._drain(self.rt.control)
            self._admit_queued()
            for lane in self.lanes:
                if lane.runner.wait_s(time.monotonic()) == 0:
                    self._step(lane)
            self.rt.stats = self._stats()
            cache = self.lanes.cache_stats()
            self.metrics.voice_cache(self.name, cache["hits"], cache["misses"])
            conditioning = self.rt.stats.get("conditioning") or {}
            if conditioning:
                self.metrics.conditioning_cache(self.name, conditioning["hits"], conditioning["misses"])

    def _poll_ms(self) -> int:
        """Sleep until a message comes, or until a runner wants its next step."""
        now = time.monotonic()
        wait = min([lane.runner.wait_s(now) for lane in self.lanes] + [math.inf])
        return IDLE_POLL_MS if math.isinf(wait) else min(IDLE_POLL_MS, math.ceil(wait * 1000))

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                _, message, _ = sockets.recv(sock)  # DEALER: no identity frame
            except zmq.Again:
                return
            except ProtocolError:
                continue  # frames from our own stages; a bad one is a bug, not a reason to die
            self._handle(message)
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return

    def _handle(self, message: object) -> None:
        if isinstance(message, Chunk):
            self.queue.push(message)
        elif isinstance(message, DropRequest):
            dropped = self.queue.drop(message.request_id)
            for lane in self.lanes:  # leaves a running batch before its next step
                dropped += lane.runner.drop(message.request_id)
            for chunk in dropped:
                self._done(chunk, False, "cancelled", message.reason)
        elif isinstance(message, Stop):
            self.running = False
        elif isinstance(message, Reset):
            # A new frontend: the chunks held here belong to requests it does not know.
            while self.queue.pop() is not None:
                pass
            for lane in self.lanes:
                lane.runner.clear()
            self.announce()
        elif isinstance(message, Rescan):
            self.catalog.rescan()
        elif isinstance(message, MergerLost):
            # Parts already sent went to the dead merger: every chunk in a runner starts
            # over from its first part (seeded, so its audio is the same).
            self.merger_generation = max(self.merger_generation, message.generation)
            for lane in self.lanes:
                for chunk in lane.runner.clear():
                    self.queue.push(chunk)

    # ------------------------------------------------------------------ admission

    def _admit_queued(self) -> None:
        """Hand queued chunks to their runners, best first. A chunk whose runner is full
        (a running batch at its limit) waits; chunks behind it for other runners go on."""
        full = [lane for lane in self.lanes if not lane.runner.has_room()]
        while len(self.queue):
            chunk = self.queue.pop(self._has_room if full else None)
            if chunk is None:
                return
            self._admit(chunk)
            full = [lane for lane in self.lanes if not lane.runner.has_room()]

    def _has_room(self, chunk: Chunk) -> bool:
        try:
            return self.lanes.resolve(chunk.voice, chunk.engine)[1].runner.has_room()
        except Exception:
            return True  # admitted at once, and answered with its error there

    def _admit(self, chunk: Chunk) -> None:
        if time.monotonic() > chunk.deadline:
            self._done(chunk, False, "timeout", "deadline passed before synthesis")
            return
        try:
            lane, voice = self.lanes.load(chunk)
        except VoiceError as exc:
            self._done(chunk, False, exc.code, str(exc))
            return
        except (EngineError, FamilyError) as exc:
            self._done(chunk, False, "voice_unavailable", str(exc))
            return
        except Exception as exc:
            # Whatever a voice's files do to its loader, the worker keeps serving the others:
            # the voice is unavailable (with the reason) until its files change.
            why = f"voice {chunk.voice!r} failed to load: {type(exc).__name__}: {exc}"
            self.catalog.mark_unavailable(chunk.voice, why)
            self._done(chunk, False, "voice_unavailable", why)
            return
        try:
            lane.runner.admit(voice, chunk)
        except EngineError as exc:
            self._done(chunk, False, "engine_error", str(exc))

    # ------------------------------------------------------------------ synthesis

    def _step(self, lane: Lane) -> None:
        """One unit of a runner's work; send what it made ready."""
        for chunk in lane.runner.expire(time.monotonic()):
            self._done(chunk, False, "timeout", "deadline passed during synthesis")
        self.rt.busy_since = step_started = time.monotonic()
        started = time.process_time()  # process time: an engine's own threads count too
        try:
            result = lane.runner.step(time.monotonic())
        finally:
            self.engine_cpu_s += time.process_time() - started
            self.rt.busy_since = None
        step = (step_started, time.monotonic())
        self.oom_events += result.oom_events
        for chunk in result.requeue:  # out of memory: the batch limit shrank; it runs later
            self.queue.push(chunk)
        for chunk, code, message in result.failed:
            self._done(chunk, False, code, message)
        if result.batch and any(p.part == 0 for p in result.pieces):
            self.batches += 1
            self.batch_items += result.batch
            self.last_batch_size = result.batch
            self.metrics.batch_size(result.batch)
        for piece in result.pieces:
            if not self._send_audio(piece, step):
                for chunk in lane.runner.drop(piece.chunk.request_id):
                    self._done(chunk, False, "cancelled", "another chunk of its request failed")

    def _send_audio(self, piece: Piece, step: tuple[float, float]) -> bool:
        chunk = piece.chunk
        put = time.monotonic()
        try:  # the merger frees slots as it reads them: wait for one within the deadline
            handle = self.pool.put_waiting(piece.audio, chunk.deadline)
        except PoolFull as exc:
            self._done(chunk, False, "no_memory", str(exc))
            return False
        timeline = piece_timeline(piece, step, put) if chunk.timeline else []
        sockets.send(self.merger, ChunkAudio(chunk.request_id, chunk.seq, chunk.count, piece.sample_rate, handle,
                                             piece.synth_s, piece.queued_s, piece.part, piece.last,
                                             stream=chunk.stream, deadline=chunk.deadline, words=piece.words,
                                             planned_at=chunk.submitted_at, timeline=timeline))
        if piece.last:
            self._done(chunk, True)
        return True

    def _done(self, chunk: Chunk, ok: bool, code: str = "", message: str = "") -> None:
        self.chunks_done += 1
        sockets.send(self.frontend, ChunkDone(chunk.request_id, chunk.seq, ok, code, message, self.merger_generation))

    def _stats(self) -> dict:
        queued = len(self.queue) + sum(lane.runner.stats().get("queued", 0) for lane in self.lanes)
        return {"queue": queued, "voices": self.lanes.voice_names(), "voice_details": self.lanes.voice_details(),
                "cache": self.lanes.cache_stats(), "chunks_done": self.chunks_done, "device": self.args.device,
                "engine": self.lanes.default_engine, "pool": self.pool.usage(),
                "batch_budget": {lane.engine_name: lane.runner.stats().get("batch_budget") for lane in self.lanes},
                "batches": self.batches, "batch_items": self.batch_items, "last_batch": self.last_batch_size,
                "oom_events": self.oom_events, "engine_cpu_s": self.engine_cpu_s,
                "conditioning": self._conditioning_stats()}

    def _conditioning_stats(self) -> dict[str, int]:
        """The runners' conditioning caches (requests' own reference clips), summed."""
        total: dict[str, int] = {}
        for lane in self.lanes:
            for key, value in (lane.runner.stats().get("conditioning") or {}).items():
                total[key] = total.get(key, 0) + value
        return total


def main(args: StageArgs) -> None:
    os.environ.update(args.env)
    runtime = StageRuntime(args)
    worker = Worker(args, runtime)
    worker.preload(args.preload)
    runtime.stats = worker._stats()  # the first ready heartbeat already shows what is loaded
    runtime.ready = True
    worker.announce()
    try:
        worker.run()
    finally:
        runtime.close()
