"""Synthesis worker: one per GPU, or N on CPU. Loop: take chunks from the frontend,
synthesize them with the engine (batched by voice where the engine batches), put the
audio in this worker's shared-memory pool and send the handle to the merger."""
from __future__ import annotations

import os
import time

import numpy as np
import zmq

from ipc import sockets
from ipc.errors import ProtocolError
from ipc.messages import Chunk, ChunkAudio, ChunkDone, Control, DropRequest, WorkerState
from ipc.shm import PoolFull, ShmPool
from stages.chunk_queue import ChunkQueue
from stages.engines import create_engine
from stages.engines.base import EngineError, EngineSettings, SynthesisItem
from stages.runtime import StageArgs, StageRuntime
from stages.voice_cache import VoiceCache
from stages.voices import VoiceCatalog, VoiceError

POOL_RETRY_S = 0.005


class Worker:
    def __init__(self, args: StageArgs, runtime: StageRuntime) -> None:
        cfg = args.config
        self.args, self.rt, self.name = args, runtime, args.name
        self.settings = EngineSettings(device=args.device, threads=cfg.worker.threads, precision=cfg.worker.precision)
        self.default_engine = cfg.worker.engine
        self.catalog = VoiceCatalog(cfg.voices_path())
        self.caches: dict[str, VoiceCache] = {}
        self.cache = self._cache(self.default_engine)
        self.pool = ShmPool.attach(args.layout.pools[args.layout.worker_pool_name(self.name)], producer=True)
        self.frontend = sockets.make_socket(runtime.ctx, zmq.DEALER, identity=self.name.encode())
        self.frontend.connect(args.layout.workers_endpoint)
        self.merger = sockets.make_socket(runtime.ctx, zmq.PUSH)
        self.merger.connect(args.layout.merger_endpoint)
        self.queue = ChunkQueue()
        self.chunks_done = 0
        self.running = True

    def _cache(self, engine: str) -> VoiceCache:
        """The voice cache of an engine, created (and the engine with it) on first use."""
        cache = self.caches.get(engine)
        if cache is None:
            engine_obj = create_engine(engine, self.settings)
            cache = self.caches[engine] = VoiceCache(engine_obj, self.args.config.worker.voice_cache_mib * 2**20)
        return cache

    def preload(self, names: list[str]) -> None:
        for name in names:
            try:
                self.cache.get(self.catalog.get(name))
            except (VoiceError, EngineError) as exc:
                print(f"voxpipe worker {self.name}: cannot preload {name!r}: {exc}", flush=True)

    def announce(self) -> None:
        state = WorkerState(self.name, self.cache.names(), self.args.config.worker.credits, self.rt.ready)
        sockets.send(self.frontend, state)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.rt.control, zmq.POLLIN)
        while self.running:
            events = dict(poller.poll(0 if len(self.queue) else 100))
            if self.frontend in events:
                self._drain(self.frontend)
            if self.rt.control in events:
                self._drain(self.rt.control)
            if len(self.queue):
                self._run_next()
            self.rt.stats = self._stats()

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
            for chunk in self.queue.drop(message.request_id):
                self._done(chunk, False, "cancelled", message.reason)
        elif isinstance(message, Control):
            if message.command == "stop":
                self.running = False
            elif message.command == "rescan":
                self.catalog.rescan()

    def _run_next(self) -> None:
        chunk = self.queue.pop()
        assert chunk is not None
        now = time.monotonic()
        if now > chunk.deadline:
            self._done(chunk, False, "timeout", "deadline passed before synthesis")
            return
        try:
            cache = self._cache(chunk.engine or self.default_engine)
            voice = cache.get(self.catalog.get(chunk.voice))
        except VoiceError as exc:
            self._done(chunk, False, exc.code, str(exc))
            return
        except EngineError as exc:
            self._done(chunk, False, "voice_unavailable", str(exc))
            return
        item = SynthesisItem(np.asarray(chunk.phoneme_ids, dtype=np.int64), chunk.noise_scale,
                             chunk.length_scale, chunk.noise_w, chunk.speaker_id, chunk.seed)
        self.rt.busy_since = started = time.monotonic()
        try:
            audio = cache.engine.synthesize(voice, [item])[0]
        except EngineError as exc:
            self._done(chunk, False, "engine_error", str(exc))
            return
        finally:
            self.rt.busy_since = None
        synth_s = time.monotonic() - started
        self._send_audio(chunk, audio, synth_s, started - chunk.submitted_at)

    def _send_audio(self, chunk: Chunk, audio: np.ndarray, synth_s: float, queued_s: float) -> None:
        while True:
            try:
                handle = self.pool.put(audio, chunk.deadline)
                break
            except PoolFull as exc:
                # The merger frees slots as it reads them; wait for it within the deadline.
                if time.monotonic() > chunk.deadline or audio.nbytes > self.pool.spec.slots * self.pool.spec.slot_bytes:
                    self._done(chunk, False, "no_memory", str(exc))
                    return
                time.sleep(POOL_RETRY_S)
        sample_rate = self.catalog.get(chunk.voice).sample_rate
        sockets.send(self.merger, ChunkAudio(chunk.request_id, chunk.seq, chunk.count, sample_rate, handle,
                                             synth_s, queued_s, stream=chunk.stream, deadline=chunk.deadline))
        self._done(chunk, True)

    def _done(self, chunk: Chunk, ok: bool, code: str = "", message: str = "") -> None:
        self.chunks_done += 1
        sockets.send(self.frontend, ChunkDone(chunk.request_id, chunk.seq, ok, code, message))

    def _stats(self) -> dict:
        return {"queue": len(self.queue), "voices": self.cache.names(), "cache": self.cache.stats(),
                "chunks_done": self.chunks_done, "device": self.args.device, "engine": self.default_engine,
                "pool": self.pool.usage()}


def main(args: StageArgs) -> None:
    os.environ.update(args.env)
    runtime = StageRuntime(args)
    worker = Worker(args, runtime)
    worker.preload(args.config.preload)
    runtime.ready = True
    worker.announce()
    try:
        worker.run()
    finally:
        runtime.close()
