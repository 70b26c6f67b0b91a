"""What one benchmark run measured: plain dataclasses, written out as results.json."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

VOXPIPE = "voxpipe"
PIPER = "piper"
# The PNGs `plots.plot` writes (named here: the report links them without importing matplotlib).
PLOTS = ("latency_vs_length.png", "first_audio_vs_length.png", "throughput_vs_concurrency.png")


@dataclass
class Sample:
    """One request measured end to end by its client."""

    system: str  # VOXPIPE | PIPER
    cls: str
    chars: int
    latency_s: float  # request sent -> last audio received
    first_audio_s: float  # request sent -> first audio received
    audio_s: float  # seconds of audio produced

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time per second of audio (lower is faster)."""
        return self.latency_s / self.audio_s if self.audio_s > 0 else math.nan


@dataclass
class ThroughputRun:
    """A mixed load pushed through by `clients` concurrent clients."""

    system: str
    config: str  # e.g. "daemon 2x1 threads", "sequential, 2 threads", "pool of 2 voices x 1 thread"
    clients: int
    requests: int
    wall_s: float
    audio_s: float
    latencies_s: list[float] = field(default_factory=list)
    cpu_s: float = math.nan  # CPU of the serving side: the daemon's processes, or this process for piper
    engine_cpu_s: float = math.nan  # ... of which inside engine calls (onnxruntime)
    foreign_cores: float = math.nan  # cores other processes on the machine kept busy meanwhile
    client_cpu_s: float = 0.0  # CPU of clients in other processes than cpu_s counts (voxpipe's)

    def add(self, other: "ThroughputRun") -> None:
        """Fold another round of the same configuration into this one."""
        foreign = self.foreign_cores * self.wall_s + other.foreign_cores * other.wall_s
        self.requests += other.requests
        self.wall_s += other.wall_s
        self.audio_s += other.audio_s
        self.latencies_s += other.latencies_s
        self.cpu_s += other.cpu_s
        self.engine_cpu_s += other.engine_cpu_s
        self.client_cpu_s += other.client_cpu_s
        self.foreign_cores = foreign / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def outside_engine(self) -> float:
        """Share of the serving side's CPU spent outside the engine."""
        return (self.cpu_s - self.engine_cpu_s) / self.cpu_s if self.cpu_s > 0 else math.nan

    @property
    def engine_per_audio_s(self) -> float:
        """Engine CPU seconds per second of audio: what the model itself costs."""
        return self.engine_cpu_s / self.audio_s if self.audio_s > 0 else math.nan

    @property
    def audio_per_cpu_s(self) -> float:
        """Seconds of audio per CPU second, clients included: throughput with the
        machine's other load taken out."""
        cpu = self.cpu_s + self.client_cpu_s
        return self.audio_s / cpu if cpu > 0 else math.nan

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def audio_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.nan


@dataclass
class Overhead:
    """Daemon CPU over the voxpipe throughput runs, and piper's over its own."""

    total_s: float
    engine_s: float
    by_role: dict[str, float]
    baseline_total_s: float = math.nan  # this process's CPU over piper's throughput runs
    baseline_engine_s: float = math.nan  # ... of which inside onnxruntime
    wall_s: float = math.nan  # how long the voxpipe runs took
    requests: int = 0  # requests they served
    idle_per_s: dict[str, float] = field(default_factory=dict)  # daemon CPU s per s while idle, by role

    @property
    def fixed_s(self) -> float:
        """The part of the overhead the daemon pays per second whatever it serves."""
        return sum(self.idle_per_s.values()) * self.wall_s

    @property
    def share(self) -> float:
        return (self.total_s - self.engine_s) / self.total_s if self.total_s > 0 else math.nan

    @property
    def baseline_share(self) -> float:
        if not self.baseline_total_s > 0:
            return math.nan
        return (self.baseline_total_s - self.baseline_engine_s) / self.baseline_total_s


@dataclass
class Micro:
    """Transport micro-benchmarks, seconds per round trip."""

    null_roundtrip_s: list[float] = field(default_factory=list)
    null_daemon_s: dict[str, list[float]] = field(default_factory=dict)  # the daemon's timings of them, by name
    null_cpu_per_request: dict[str, float] = field(default_factory=dict)  # CPU s by process role
    ping_s: list[float] = field(default_factory=list)
    shm_s: list[float] = field(default_factory=list)
    zmq_s: list[float] = field(default_factory=list)
    audio_bytes: int = 0


@dataclass
class BenchResults:
    setup: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    throughput: list[ThroughputRun] = field(default_factory=list)
    overhead: Overhead | None = None
    micro: Micro | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for sample, raw in zip(self.samples, out["samples"]):
            raw["rtf"] = sample.rtf
        for run, raw in zip(self.throughput, out["throughput"]):
            raw.update(requests_per_s=run.requests_per_s, audio_per_s=run.audio_per_s,
                       outside_engine=run.outside_engine, engine_per_audio_s=run.engine_per_audio_s,
                       audio_per_cpu_s=run.audio_per_cpu_s)
        if self.overhead is not None:
            out["overhead"].update(share=self.overhead.share, baseline_share=self.overhead.baseline_share)
        return out


def throughput_levels(runs: list[ThroughputRun]) -> list[tuple[int, ThroughputRun | None, ThroughputRun | None]]:
    """(clients, voxpipe's run, piper's best run) for every concurrency level."""
    levels = sorted({r.clients for r in runs})
    out = []
    for clients in levels:
        vox = next((r for r in runs if r.system == VOXPIPE and r.clients == clients), None)
        piper = [r for r in runs if r.system == PIPER and r.clients == clients]
        best = max(piper, key=lambda r: r.requests_per_s) if piper else None
        out.append((clients, vox, best))
    return out
