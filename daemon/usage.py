"""Voice popularity, kept across restarts so the supervisor can preload what people use.

Counts decay with a half-life, so "popular" means recently popular. The file is small
JSON, written atomically (temp file + rename) so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

HALF_LIFE_S = 7 * 24 * 3600.0
STATE_FILE = "usage.json"


class UsageState:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self.scores: dict[str, float] = {}
        self.updated = time.time()
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.updated = float(raw.get("updated", time.time()))
            self.scores = {str(k): float(v) for k, v in raw.get("scores", {}).items() if float(v) > 0}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError):
            self.scores = {}  # a damaged state file only costs us the popularity ranking

    def _decay_to(self, now: float) -> None:
        factor = math.pow(0.5, max(0.0, now - self.updated) / HALF_LIFE_S)
        if factor < 1.0:
            self.scores = {k: v * factor for k, v in self.scores.items() if v * factor > 1e-3}
        self.updated = now

    def record(self, counts: dict[str, int], now: float | None = None) -> None:
        """Add request counts per voice (increments since the last call)."""
        self._decay_to(time.time() if now is None else now)
        for voice, count in counts.items():
            if count > 0:
                self.scores[voice] = self.scores.get(voice, 0.0) + count

    def top(self, n: int) -> list[str]:
        return [name for name, _ in sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"updated": self.updated, "scores": self.scores}, indent=1, sort_keys=True),
                       encoding="utf-8")
        os.replace(tmp, self.path)
