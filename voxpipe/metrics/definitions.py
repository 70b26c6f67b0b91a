"""Every voxpipe metric, defined once.

Two kinds:
- Recorded by the stage processes (requests, latencies, batches, voice cache): they use
  prometheus_client's multiprocess mode, where each process writes its samples to files
  in the per-run directory named by PROMETHEUS_MULTIPROC_DIR and the supervisor's
  exporter sums the files at scrape time. Counters of a process that died stay in the
  sum, so totals survive restarts. prometheus_client picks its value store when it is
  first imported, so it is imported here only inside `recorder()`, and only when the
  variable is set; without it (metrics off) every recording call is a no-op.
- Reported by the supervisor from its own process table at scrape time (queue depth,
  memory, restarts, GPUs): `supervisor_families`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Buckets: first audio is meant to be well under a second; whole requests and stage
# steps span milliseconds (short text on a GPU) to minutes (long text on a CPU).
FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

STAGES = ("plan", "queue", "synth", "merge")  # label values of voxpipe_stage_seconds


class Recorder:
    """What stages record. This base class records nothing (metrics off)."""

    enabled = False

    def request_ended(self, outcome: str, total_s: float | None = None, first_audio_s: float | None = None,
                      audio_s: float = 0.0, chars: int = 0) -> None:
        """A request was answered: `outcome` is "ok" or its error code."""

    def stage_latency(self, stage: str, seconds: float) -> None:
        """Time one chunk or request spent in a stage (one of STAGES)."""

    def batch_size(self, size: int) -> None:
        """Items in one engine call."""

    def voice_cache(self, worker: str, hits: int, misses: int) -> None:
        """A worker's cache totals so far; the counters advance by the difference."""

    def conditioning_cache(self, worker: str, hits: int, misses: int) -> None:
        """A worker's conditioning cache totals so far (requests' own reference clips)."""


class PrometheusRecorder(Recorder):
    enabled = True

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("voxpipe_requests", "Requests answered, by outcome (ok or the error code).",
                                ["outcome"])
        self.duration = Histogram("voxpipe_request_duration_seconds",
                                  "Time from accepting a request to its final answer (successful requests).",
                                  buckets=REQUEST_BUCKETS)
        self.first_audio = Histogram("voxpipe_first_audio_seconds",
                                     "Time from accepting a request to its first audio reaching the client.",
                                     buckets=FIRST_AUDIO_BUCKETS)
        self.audio = Counter("voxpipe_audio_seconds", "Seconds of audio delivered.")
        self.chars = Counter("voxpipe_text_chars", "Characters of text synthesized (successful requests).")
        self.stage = Histogram("voxpipe_stage_seconds",
                               "Time spent per stage: plan (per request), queue and synth (per chunk), "
                               "merge (per request).", ["stage"], buckets=STAGE_BUCKETS)
        self.batches = Histogram("voxpipe_batch_size", "Items per engine call.", buckets=BATCH_BUCKETS)
        self.cache_hits = Counter("voxpipe_voice_cache_hits", "Voice cache hits.", ["worker"])
        self.cache_misses = Counter("voxpipe_voice_cache_misses", "Voice cache misses (voice loads).", ["worker"])
        self._cache_seen: dict[str, tuple[int, int]] = {}
        self.conditioning_hits = Counter("voxpipe_conditioning_cache_hits",
                                         "Requests' reference clips whose prompt a worker had cached.", ["worker"])
        self.conditioning_misses = Counter("voxpipe_conditioning_cache_misses",
                                           "Requests' reference clips whose prompt a worker computed.", ["worker"])
        self._conditioning_seen: dict[str, tuple[int, int]] = {}

    def request_ended(self, outcome: str, total_s: float | None = None, first_audio_s: float | None = None,
                      audio_s: float = 0.0, chars: int = 0) -> None:
        self.requests.labels(outcome).inc()
        if first_audio_s is not None:
            self.first_audio.observe(first_audio_s)
        if outcome == "ok":
            if total_s is not None:
                self.duration.observe(total_s)
            self.chars.inc(chars)
        if audio_s > 0:
            self.audio.inc(audio_s)

    def stage_latency(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(max(0.0, seconds))

    def batch_size(self, size: int) -> None:
        self.batches.observe(size)

    def voice_cache(self, worker: str, hits: int, misses: int) -> None:
        seen_hits, seen_misses = self._cache_seen.get(worker, (0, 0))
        if hits > seen_hits:
            self.cache_hits.labels(worker).inc(hits - seen_hits)
        if misses > seen_misses:
            self.cache_misses.labels(worker).inc(misses - seen_misses)
        self._cache_seen[worker] = (max(hits, seen_hits), max(misses, seen_misses))

    def conditioning_cache(self, worker: str, hits: int, misses: int) -> None:
        seen_hits, seen_misses = self._conditioning_seen.get(worker, (0, 0))
        if hits > seen_hits:
            self.conditioning_hits.labels(worker).inc(hits - seen_hits)
        if misses > seen_misses:
            self.conditioning_misses.labels(worker).inc(misses - seen_misses)
        self._conditioning_seen[worker] = (max(hits, seen_hits), max(misses, seen_misses))


_recorder: Recorder | None = None


def recorder() -> Recorder:
    """This process's recorder: a real one when the supervisor turned metrics on (it sets
    PROMETHEUS_MULTIPROC_DIR in every stage's environment), else a no-op."""
    global _recorder
    if _recorder is None:
        _recorder = Recorder()
        if os.environ.get(MULTIPROC_ENV):
            try:
                _recorder = PrometheusRecorder()
            except ImportError:
                pass  # the supervisor refuses to turn metrics on without the library
    return _recorder


# ---- reported by the supervisor --------------------------------------------------------------

QUEUE_KEYS = {"frontend": "queued", "worker": "queue", "merger": "requests"}  # stats key per role


def supervisor_families(processes: list[dict[str, Any]], devices: list[dict[str, Any]],
                        ready: bool) -> Iterable[Any]:
    """Metric families from the supervisor's latest process table and device readings."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = GaugeMetricFamily("voxpipe_ready", "1 while every stage is ready and healthy.", value=1 if ready else 0)
    stage_up = GaugeMetricFamily("voxpipe_stage_up", "1 while the stage process is alive and ready.",
                                 labels=["role", "name"])
    queue = GaugeMetricFamily("voxpipe_queue_depth",
                              "Work waiting per stage: chunks (frontend, workers) or requests (merger).",
                              labels=["role", "name"])
    active = GaugeMetricFamily("voxpipe_active_requests", "Requests accepted and not yet answered.")
    rss = GaugeMetricFamily("voxpipe_process_resident_memory_bytes", "Resident memory per process.",
                            labels=["role", "name"])
    restarts = CounterMetricFamily("voxpipe_restarts", "Stage processes restarted, by role.", labels=["role"])
    by_role: dict[str, int] = {}
    for proc in processes:
        role, name = str(proc.get("role", "")), str(proc.get("name", ""))
        stats = proc.get("stats") or {}
        if proc.get("rss") is not None:
            rss.add_metric([role, name], float(proc["rss"]))
        if role == "supervisor":
            continue
        stage_up.add_metric([role, name], 1.0 if proc.get("alive") and proc.get("ready") else 0.0)
        key = QUEUE_KEYS.get(role)
        if key is not None:
            queue.add_metric([role, name], float(stats.get(key, 0)))
        if role == "frontend":
            active.add_metric([], float(stats.get("active", 0)))
        by_role[role] = by_role.get(role, 0) + int(proc.get("restarts", 0))
    for role, count in sorted(by_role.items()):
        restarts.add_metric([role], float(count))
    families = [up, stage_up, queue, active, rss, restarts]
    gpus = [d for d in devices if d.get("kind") == "gpu"]
    if gpus:
        util = GaugeMetricFamily("voxpipe_gpu_utilization_ratio", "GPU busy fraction over the last sample period.",
                                 labels=["gpu", "name"])
        used = GaugeMetricFamily("voxpipe_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
        total = GaugeMetricFamily("voxpipe_gpu_memory_total_bytes", "GPU memory installed.", labels=["gpu", "name"])
        for gpu in gpus:
            labels = [str(gpu["index"]), str(gpu["name"])]
            if gpu.get("utilization") is not None:
                util.add_metric(labels, float(gpu["utilization"]))
            used.add_metric(labels, float(gpu.get("memory_used", 0)))
            total.add_metric(labels, float(gpu.get("memory_total", 0)))
        families += [util, used, total]
    return families
