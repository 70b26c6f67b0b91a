"""A voxpipe daemon as a subprocess for the benchmark, and the CPU time it spends.

The daemon runs in a session of its own, so every process it spawns (frontend,
workers, merger, helpers) is found by its session id in /proc, whatever its name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

from voxpipe.ipc.client import Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.procutil import CLOCK_TICKS, process_cpu


class DaemonError(Exception):
    """The daemon exited or did not become ready; the message carries its log tail."""


@dataclass(frozen=True)
class DaemonSettings:
    engine: str = "onnx"
    workers: int = 2
    threads: int = 1
    config: tuple[str, ...] = ()  # more TOML lines for the config (top-level; dotted keys for tables)


def session_cpu(session: int) -> dict[int, float]:
    """CPU seconds of every live process in a session, by pid."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = process_cpu(int(entry.name))
            if info is not None and info[0] == session:
                out[int(entry.name)] = info[1]
    return out


class BenchDaemon:
    def __init__(self, workdir: Path, settings: DaemonSettings) -> None:
        workdir = Path(workdir).absolute()  # the daemon runs in it: its paths must not be relative
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.settings = workdir, settings
        self.endpoint = f"ipc://{workdir / 'bench.sock'}"
        self.config_path = workdir / "voxpipe.toml"
        self.config_path.write_text("\n".join([
            f"endpoint = {json.dumps(self.endpoint)}", f"state_dir = {json.dumps(str(workdir / 'state'))}",
            f"worker.engine = {json.dumps(settings.engine)}", f"worker.count = {settings.workers}",
            f"worker.threads = {settings.threads}", *settings.config]) + "\n")
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_s: float = 180.0) -> "BenchDaemon":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--config", str(self.config_path)],
                                         cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.client(connect_timeout=1.0) as client:
                    client.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                return self
            except VoxpipeError:
                time.sleep(0.2)
        self.stop()
        raise DaemonError(f"the daemon was not ready in {wait_s:.0f} s:\n{self.log_tail()}")

    def client(self, **kwargs: Any) -> Client:
        return Client(self.endpoint, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_by_pid(self) -> dict[int, float]:
        assert self.proc is not None
        return session_cpu(self.proc.pid)

    def status(self) -> dict[str, Any]:
        with self.client() as client:
            return client.status()

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def __enter__(self) -> "BenchDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class CpuWindow:
    """Daemon CPU between two snapshots, split into engine time and the rest by role."""

    total_s: float = 0.0
    engine_s: float = 0.0
    by_role: dict[str, float] | None = None

    @property
    def overhead_s(self) -> float:
        return self.total_s - self.engine_s

    @property
    def overhead_share(self) -> float:
        return self.overhead_s / self.total_s if self.total_s > 0 else float("nan")

    def add(self, other: "CpuWindow") -> None:
        self.total_s += other.total_s
        self.engine_s += other.engine_s
        roles = dict(self.by_role or {})
        for role, seconds in (other.by_role or {}).items():
            roles[role] = roles.get(role, 0.0) + seconds
        self.by_role = roles


@dataclass(frozen=True)
class CpuSnapshot:
    cpu: dict[int, float]
    engine_s: float | None  # None: the workers do not report engine time
    roles: dict[int, str]


SETTLED_TIMEOUT_S = 10.0  # twenty heartbeats: a worker silent this long has no figures to give


def stale_stages(status: dict[str, Any], since: float, roles: Collection[str] | None = None) -> list[str]:
    """The stages (of `roles`; else all but the supervisor) whose reported figures were
    made before `since` (time.monotonic(): their `stats_at` is CLOCK_MONOTONIC too)."""
    return [str(p.get("name")) for p in status.get("processes", [])
            if (p.get("role") in roles if roles is not None else p.get("role") != "supervisor")
            and float((p.get("stats") or {}).get("stats_at", 0.0)) < since]


def fresh_status(read: Callable[[], dict[str, Any]], since: float, timeout_s: float,
                 roles: Collection[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The daemon's status (from `read`) once every stage's figures were made after
    `since`, so they count everything it finished before then; stages report through
    heartbeats, and an idle one makes its figures only when its loop turns. After
    `timeout_s`, the status as it is: (status, the stages still stale)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = read()
        stale = stale_stages(status, since, roles)
        if not stale or time.monotonic() > deadline:
            return status, stale
        time.sleep(0.05)


def snapshot(daemon: BenchDaemon, timeout_s: float = SETTLED_TIMEOUT_S) -> CpuSnapshot:
    """CPU of every daemon process now, and the engine CPU the workers report. Workers
    report through heartbeats, so the engine figure is read once every worker's reported
    stats were made after this call began (their `stats_at`), which means they count
    every chunk finished before it; engine time does not grow while the daemon is idle,
    so the two figures describe the same moment. A worker that reports nothing newer
    within `timeout_s` leaves the engine figure unknown (None)."""
    since = time.monotonic()
    cpu = daemon.cpu_by_pid()
    status, stale = fresh_status(daemon.status, since, timeout_s, roles=("worker",))
    engine: float | None = None if stale else 0.0
    roles = {}
    for proc in status.get("processes", []):
        pid, role = proc.get("pid"), proc.get("role", "?")
        if isinstance(pid, int):
            roles[pid] = role
        if role == "worker":
            value = (proc.get("stats") or {}).get("engine_cpu_s")
            engine = None if value is None or engine is None else engine + float(value)
    return CpuSnapshot(cpu, engine, roles)


def wait_quiet(daemon: BenchDaemon, timeout_s: float = 30.0, probe_s: float = 0.1, max_cores: float = 0.2) -> bool:
    """Wait until the daemon's processes use next to no CPU, under `max_cores` over one
    probe (what a cancelled request left running has finished), so the next measurement
    starts on an idle daemon. False when it never went quiet within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    before = sum(daemon.cpu_by_pid().values())
    while time.monotonic() < deadline:
        time.sleep(probe_s)
        now = sum(daemon.cpu_by_pid().values())
        if now - before < max_cores * probe_s:  # by default a fifth of one core: loops and heartbeats only
            return True
        before = now
    return False


def window(before: CpuSnapshot, after: CpuSnapshot) -> CpuWindow | None:
    """The CPU spent between two snapshots; None without engine figures or if a stage
    process was replaced in between (its CPU would be lost). Short-lived helpers in the
    session (a library probing with a subprocess) may come and go: their CPU is noise."""
    stages_gone = {pid for pid in before.cpu if pid in before.roles and pid not in after.cpu}
    if before.engine_s is None or after.engine_s is None or stages_gone:
        return None
    by_role: dict[str, float] = {}
    for pid, seconds in after.cpu.items():
        role = after.roles.get(pid, "other")
        by_role[role] = by_role.get(role, 0.0) + seconds - before.cpu.get(pid, 0.0)
    engine = after.engine_s - before.engine_s
    by_role["worker (engine)"] = engine
    by_role["worker"] = by_role.get("worker", 0.0) - engine
    return CpuWindow(sum(after.cpu[p] - before.cpu.get(p, 0.0) for p in after.cpu), engine, by_role)


def idle_rate(daemon: BenchDaemon, seconds: float) -> dict[str, float]:
    """CPU seconds per second each role spends while the daemon serves nothing (its
    loops, heartbeats and reports): the part of the overhead paid whatever the load."""
    roles = {p["pid"]: p.get("role", "?") for p in daemon.status().get("processes", []) if isinstance(p.get("pid"), int)}
    before = daemon.cpu_by_pid()
    started = time.monotonic()
    time.sleep(seconds)
    after = daemon.cpu_by_pid()
    elapsed = time.monotonic() - started
    rate: dict[str, float] = {}
    for pid, cpu in after.items():
        role = roles.get(pid, "other")
        rate[role] = rate.get(role, 0.0) + (cpu - before.get(pid, cpu)) / elapsed
    return rate


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class ForeignLoad:
    """How many cores other processes kept busy over a stretch of time: the machine's busy
    time less this process's and the daemon's. The benchmark shares its machine; this
    says how much a figure was disturbed."""

    def __init__(self, daemon: BenchDaemon) -> None:
        self.daemon = daemon
        self._start = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), machine_busy_s(), time.process_time(), sum(self.daemon.cpu_by_pid().values()))

    def cores(self) -> float:
        """Foreign cores since this object was made."""
        end = self._now()
        wall, busy, own, daemon = (b - a for a, b in zip(self._start, end))
        return max(0.0, busy - own - daemon) / wall if wall > 0 else float("nan")
