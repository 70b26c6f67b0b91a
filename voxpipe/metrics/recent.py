"""The frontend's view of the last minute for `voxpipe status`: throughput and average
latency of the requests that ended in it, in per-second buckets (memory stays bounded
however many requests arrive), and the workers' voice cache hit rate."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class _Bucket:
    second: int
    completed: int = 0
    failed: int = 0
    total_s: float = 0.0
    first_audio_s: float = 0.0
    first_audio_n: int = 0
    audio_s: float = 0.0


class RecentWindow:
    def __init__(self, span_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span_s = span_s
        self._clock = clock
        self._started = clock()
        self._buckets: list[_Bucket] = []

    def add(self, ok: bool, total_s: float, first_audio_s: float | None, audio_s: float = 0.0) -> None:
        """One accepted request ended (answered with audio when `ok`, else with an error)."""
        second = int(self._clock())
        if not self._buckets or self._buckets[-1].second != second:
            self._prune(second)
            self._buckets.append(_Bucket(second))
        bucket = self._buckets[-1]
        if ok:
            bucket.completed += 1
            bucket.total_s += total_s
            bucket.audio_s += audio_s
        else:
            bucket.failed += 1
        if first_audio_s is not None:
            bucket.first_audio_s += first_audio_s
            bucket.first_audio_n += 1

    def _prune(self, now_second: int) -> None:
        horizon = now_second - self.span_s
        while self._buckets and self._buckets[0].second <= horizon:
            self._buckets.pop(0)

    def summary(self) -> dict[str, Any]:
        now = self._clock()
        self._prune(int(now))
        window = max(1e-3, min(self.span_s, now - self._started))
        completed = sum(b.completed for b in self._buckets)
        first_n = sum(b.first_audio_n for b in self._buckets)
        return {
            "window_s": round(window, 3),
            "completed": completed,
            "failed": sum(b.failed for b in self._buckets),
            "requests_per_s": completed / window,
            "audio_s_per_s": sum(b.audio_s for b in self._buckets) / window,
            "avg_latency_s": sum(b.total_s for b in self._buckets) / completed if completed else None,
            "avg_first_audio_s": sum(b.first_audio_s for b in self._buckets) / first_n if first_n else None,
        }


def voice_cache_summary(processes: list[dict[str, Any]], cache_name: str = "cache") -> dict[str, Any]:
    """Hits and misses summed over the workers' latest heartbeats, and the hit rate (of
    the voice cache, or of the cache the workers' stats name `cache_name`)."""
    hits = misses = 0
    for proc in processes:
        if proc.get("role") == "worker":
            cache = (proc.get("stats") or {}).get(cache_name) or {}
            hits += int(cache.get("hits", 0))
            misses += int(cache.get("misses", 0))
    return {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses) if hits + misses else None}
