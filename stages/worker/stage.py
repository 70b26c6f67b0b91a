"""Synthesis worker: one per GPU, or N on CPU. Loop: take chunks from the frontend,
synthesize them with the engine (batched by voice where the engine batches), put the
audio in this worker's shared-memory pool and send the handle to the merger."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import zmq

from voxpipe.metrics import recorder
from voxpipe.ipc import sockets
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import Chunk, ChunkAudio, ChunkDone, DropRequest, Rescan, Reset, Stop, WorkerState
from voxpipe.ipc.shm import PoolFull, ShmPool
from voxpipe.stages.worker.chunk_queue import ChunkQueue
from voxpipe.stages.engines import create_engine
from voxpipe.stages.worker.batching import BatchBudget, take_batch
from voxpipe.stages.engines.base import Engine, EngineError, EngineSettings, LoadedVoice, SynthesisItem, is_out_of_memory
from voxpipe.stages.runtime import StageArgs, StageRuntime
from voxpipe.stages.worker.voice_cache import VoiceCache
from voxpipe.stages.voices import VoiceCatalog, VoiceError, VoiceSpec

POOL_RETRY_S = 0.005


def engine_for(spec: VoiceSpec, requested: str) -> str:
    """A family with a single runtime always gets it (GPT-SoVITS voices: gpt-sovits)."""
    return "gpt-sovits" if spec.family == "gpt-sovits" else requested


def gsv_item_fields(chunk: Chunk) -> dict:
    """A GPT-SoVITS chunk's language runs and sampling settings, as SynthesisItem fields."""
    if not chunk.seg_langs:
        return {}
    segments = tuple((lang, text, n, tuple(w2p)) for lang, text, n, w2p in
                     zip(chunk.seg_langs, chunk.seg_texts, chunk.seg_phones, chunk.seg_word2ph))
    return {"text_segments": segments, "top_k": chunk.top_k, "top_p": chunk.top_p,
            "temperature": chunk.temperature, "repetition_penalty": chunk.repetition_penalty}


class Worker:
    def __init__(self, args: StageArgs, runtime: StageRuntime) -> None:
        cfg = args.config
        self.args, self.rt, self.name = args, runtime, args.name
        options: dict[str, object] = {"max_batch": cfg.worker.max_batch} if cfg.worker.max_batch > 0 else {}
        # Each engine reads the options it knows: torch the graphs, tensorrt its plans, onnx int8.
        options.update(cuda_graphs=cfg.gpu.cuda_graphs, trt_max_frames=cfg.gpu.tensorrt_max_frames,
                       int8_method=cfg.worker.int8_method)
        if cfg.gpu.tensorrt_plan_dir:
            options["plan_dir"] = str(Path(cfg.gpu.tensorrt_plan_dir).expanduser())
        self.settings = EngineSettings(device=args.device, threads=cfg.worker.threads, precision=cfg.worker.precision,
                                       options=options)
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
        self.budgets: dict[str, BatchBudget] = {}
        self.batches = self.batch_items = self.last_batch_size = self.oom_events = 0
        self.engine_cpu_s = 0.0  # CPU time inside engine calls: the rest of the daemon's is overhead
        self._queue_since: float | None = None  # when the local queue last became non-empty
        self.runners: dict[str, object] = {}  # engine name -> StreamRunner (continuous engines)
        self.metrics = recorder()
        self.running = True

    def _cache(self, engine: str) -> VoiceCache:
        """The voice cache of an engine, created (and the engine with it) on first use."""
        cache = self.caches.get(engine)
        if cache is None:
            engine_obj = create_engine(engine, self.settings)
            cache = self.caches[engine] = VoiceCache(engine_obj, int(self.args.config.worker.voice_cache_mib * 2**20))
        return cache

    def _voice_names(self) -> list[str]:
        """Voices loaded in any engine's cache (GPT-SoVITS voices live in their own)."""
        return [name for cache in self.caches.values() for name in cache.names()]

    def preload(self, names: list[str]) -> None:
        for name in names:
            try:
                spec = self.catalog.get(name)
                self._cache(engine_for(spec, self.default_engine)).get(spec)
            except (VoiceError, EngineError) as exc:
                print(f"voxpipe worker {self.name}: cannot preload {name!r}: {exc}", flush=True)

    def announce(self) -> None:
        # A batching engine needs enough chunks in hand to fill its batches.
        credits = max([self.args.config.worker.credits] + [self._budget(c.engine).max_items for c in self.caches.values()])
        state = WorkerState(self.name, self._voice_names(), credits, self.rt.ready)
        sockets.send(self.frontend, state)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.rt.control, zmq.POLLIN)
        while self.running:
            wait_ms = self._batch_wait_ms()
            streaming = any(len(r) for r in self.runners.values())
            events = dict(poller.poll(0 if streaming else 100 if not len(self.queue) else wait_ms))
            if self.frontend in events:
                self._drain(self.frontend)
            if self.rt.control in events:
                self._drain(self.rt.control)
            if len(self.queue) and self._batch_wait_ms() == 0:
                self._run_next()
                self._queue_since = time.monotonic() if len(self.queue) else None
            for name, runner in list(self.runners.items()):
                if len(runner):
                    self._step_stream(runner)
            self.rt.stats = self._stats()
            self.metrics.voice_cache(self.name, sum(c.hits for c in self.caches.values()),
                                     sum(c.misses for c in self.caches.values()))

    def _batch_wait_ms(self) -> int:
        """How much longer to let a partial batch fill (0: run now)."""
        if not len(self.queue):
            self._queue_since = None
            return 0
        now = time.monotonic()
        if self._queue_since is None:
            self._queue_since = now
        budget = self._budget(self.cache.engine)
        if budget.max_items <= 1 or len(self.queue) >= budget.max_items:
            return 0
        left = self.args.config.worker.batch_wait_ms / 1000.0 - (now - self._queue_since)
        return max(0, int(left * 1000))

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
            for runner in self.runners.values():  # leaves the running batch before its next step
                dropped += runner.drop(message.request_id)
            for chunk in dropped:
                self._done(chunk, False, "cancelled", message.reason)
        elif isinstance(message, Stop):
            self.running = False
        elif isinstance(message, Reset):
            # A new frontend: the chunks queued here belong to requests it does not know.
            while self.queue.pop() is not None:
                pass
            self.announce()
        elif isinstance(message, Rescan):
            self.catalog.rescan()

    def _startable(self, chunk: Chunk) -> bool:
        """False for a chunk whose engine's running batch is full: it waits there, and the
        chunks behind it (other voices, other engines) go first instead of waiting too."""
        full = {name for name, runner in self.runners.items() if not runner.has_room()}
        if not full:
            return True
        try:
            spec = self.catalog.get(chunk.voice)
        except VoiceError:
            return True  # answered with its error at once
        return engine_for(spec, chunk.engine or self.default_engine) not in full

    def _run_next(self) -> None:
        first = self.queue.pop(self._startable if self.runners else None)
        if first is None:  # every queued chunk waits for a running batch to make room
            return
        now = time.monotonic()
        if now > first.deadline:
            self._done(first, False, "timeout", "deadline passed before synthesis")
            return
        try:
            spec = self.catalog.get(first.voice)
            cache = self._cache(engine_for(spec, first.engine or self.default_engine))
            voice = cache.get(spec)
        except VoiceError as exc:
            self._done(first, False, exc.code, str(exc))
            return
        except EngineError as exc:
            self._done(first, False, "voice_unavailable", str(exc))
            return
        budget = self._budget(cache.engine)
        if getattr(cache.engine, "continuous", False):
            self._admit(cache.engine, voice, first, budget)
            return
        window = self.args.config.worker.engine_stream_frames
        if first.stream and window > 0 and hasattr(cache.engine, "synthesize_stream"):
            self._synthesize_windows(cache.engine, voice, first, window)
            return
        self._synthesize(cache.engine, voice, take_batch(first, self.queue, budget, now), budget)

    def _synthesize_windows(self, engine: Engine, voice: LoadedVoice, chunk: Chunk, window: int) -> None:
        """Within-sentence streaming: each decoded window goes to the merger as a part of
        the chunk, so a long sentence's first audio comes after one window."""
        item = SynthesisItem(np.asarray(chunk.phoneme_ids, dtype=np.int64), chunk.noise_scale, chunk.length_scale,
                             chunk.noise_w, chunk.speaker_id, chunk.seed)
        started = time.monotonic()
        pieces = engine.synthesize_stream(voice, item, window)
        part = 0
        try:
            while True:
                self.rt.busy_since = time.monotonic()
                piece = next(pieces, None)
                self.rt.busy_since = None
                # Each window goes out at once; an empty last part marks the chunk's end.
                last = piece is None
                audio = np.zeros(0, np.float32) if last else piece
                if not self._send_audio(chunk, audio, time.monotonic() - started, started - chunk.submitted_at,
                                        part, last_part=last) or last:
                    return
                part += 1
        except EngineError as exc:
            self._done(chunk, False, "engine_error", str(exc))
        finally:
            self.rt.busy_since = None

    def _admit(self, engine: Engine, voice: LoadedVoice, chunk: Chunk, budget: BatchBudget) -> None:
        """A chunk joins the engine's running batch (or waits in the queue while it is full)."""
        runner = self.runners.get(engine.name)
        if runner is None:
            runner = self.runners[engine.name] = engine.stream_runner(budget.max_items)
        if not runner.has_room():
            self.queue.push(chunk)
            return
        while chunk is not None:
            item = SynthesisItem(np.asarray(chunk.phoneme_ids, dtype=np.int64), chunk.noise_scale, chunk.length_scale,
                                 chunk.noise_w, chunk.speaker_id, chunk.seed, **gsv_item_fields(chunk))
            try:
                runner.admit(voice, chunk, item)
            except EngineError as exc:
                self._done(chunk, False, "engine_error", str(exc))
            # Queued chunks of the same voice join the same step; others on later passes.
            chunk = self.queue.pop(lambda c, v=chunk.voice: c.voice == v) if runner.has_room() else None

    def _step_stream(self, runner) -> None:
        """One decoding step of a running batch; send the audio pieces it made ready."""
        for chunk in runner.expire(time.monotonic()):
            self._done(chunk, False, "timeout", "deadline passed during synthesis")
        self.rt.busy_since = time.monotonic()
        started = time.process_time()
        try:
            result = runner.step()
        finally:
            self.engine_cpu_s += time.process_time() - started
            self.rt.busy_since = None
        self.oom_events += len(result.evicted)
        for chunk in result.evicted:  # out of memory: the batch limit shrank; it runs later
            self.queue.push(chunk)
        for chunk, message in result.failed:
            self._done(chunk, False, "engine_error", message)
        for piece in result.pieces:
            if piece.part == 0:
                self.metrics.batch_size(len(runner) + 1)
            if not self._send_audio(piece.chunk, piece.audio, piece.synth_s, piece.queued_s, piece.part, piece.last):
                runner.drop(piece.chunk.request_id)

    def _budget(self, engine: Engine) -> BatchBudget:
        budget = self.budgets.get(engine.name)
        if budget is None:
            cfg = self.args.config.worker
            max_items = getattr(engine, "max_batch", 1)
            memory = engine.memory_info()
            budget = self.budgets[engine.name] = BatchBudget.from_memory(
                max_items, memory.get("free"), getattr(engine, "bytes_per_phoneme", None), cfg.batch_phonemes)
        return budget

    def _synthesize(self, engine: Engine, voice: LoadedVoice, batch: list[Chunk], budget: BatchBudget) -> None:
        items = [SynthesisItem(np.asarray(c.phoneme_ids, dtype=np.int64), c.noise_scale, c.length_scale, c.noise_w,
                               c.speaker_id, c.seed, **gsv_item_fields(c)) for c in batch]
        self.rt.busy_since = started = time.monotonic()
        try:
            audios = self._engine_call(engine, voice, items)
        except EngineError as exc:
            for chunk in batch:
                self._done(chunk, False, "engine_error", str(exc))
            return
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Out of memory: halve the budget and run the halves; one chunk alone that
            # still does not fit is handed back to the frontend to try elsewhere.
            budget.shrink()
            self.oom_events += 1
            if len(batch) == 1:
                self._done(batch[0], False, "no_memory", f"out of memory synthesizing one chunk: {exc}")
                return
            half = len(batch) // 2
            self._synthesize(engine, voice, batch[:half], budget)
            self._synthesize(engine, voice, batch[half:], budget)
            return
        finally:
            self.rt.busy_since = None
        synth_s = time.monotonic() - started
        self.batches += 1
        self.batch_items += len(batch)
        self.last_batch_size = len(batch)
        self.metrics.batch_size(len(batch))
        for chunk, audio in zip(batch, audios):
            self._send_audio(chunk, audio, synth_s, started - chunk.submitted_at)

    def _engine_call(self, engine: Engine, voice: LoadedVoice, items: list[SynthesisItem]) -> list[np.ndarray]:
        # Process time, so that an engine's own threads count as engine time too.
        started = time.process_time()
        try:
            return engine.synthesize(voice, items)
        finally:
            self.engine_cpu_s += time.process_time() - started

    def _send_audio(self, chunk: Chunk, audio: np.ndarray, synth_s: float, queued_s: float,
                    part: int = 0, last_part: bool = True) -> bool:
        while True:
            try:
                handle = self.pool.put(audio, chunk.deadline)
                break
            except PoolFull as exc:
                # The merger frees slots as it reads them; wait for it within the deadline.
                if time.monotonic() > chunk.deadline or audio.nbytes > self.pool.spec.slots * self.pool.spec.slot_bytes:
                    self._done(chunk, False, "no_memory", str(exc))
                    return False
                time.sleep(POOL_RETRY_S)
        sample_rate = self.catalog.get(chunk.voice).sample_rate
        sockets.send(self.merger, ChunkAudio(chunk.request_id, chunk.seq, chunk.count, sample_rate, handle,
                                             synth_s, queued_s, part, last_part, stream=chunk.stream,
                                             deadline=chunk.deadline))
        if last_part:
            self._done(chunk, True)
        return True

    def _done(self, chunk: Chunk, ok: bool, code: str = "", message: str = "") -> None:
        self.chunks_done += 1
        sockets.send(self.frontend, ChunkDone(chunk.request_id, chunk.seq, ok, code, message))

    def _stats(self) -> dict:
        return {"queue": len(self.queue), "voices": self._voice_names(), "cache": self.cache.stats(),
                "chunks_done": self.chunks_done, "device": self.args.device, "engine": self.default_engine,
                "pool": self.pool.usage(), "batch_budget": {n: b.phonemes for n, b in self.budgets.items()},
                "batches": self.batches, "batch_items": self.batch_items, "last_batch": self.last_batch_size,
                "oom_events": self.oom_events, "engine_cpu_s": self.engine_cpu_s}


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
