"""The supervisor: owns every resource that outlives one stage process (shared-memory
pools, the socket directory), spawns the stages, watches their heartbeats, restarts
what dies or hangs, and drains on SIGTERM."""
from __future__ import annotations

import collections
import contextlib
import fcntl
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from voxpipe.config import Config
from voxpipe.gpus import Gpu, discover_gpus
from voxpipe.metrics.devices import DeviceProbe, rss_bytes
from voxpipe.metrics.exporter import MetricsError, MetricsExporter
from voxpipe.daemon import allocator
from voxpipe.daemon.notify import Notifier
from voxpipe.procutil import set_title
from voxpipe.daemon.usage import UsageState
from voxpipe.daemon.hang import CpuWatch
from voxpipe.daemon.stage_entry import run_stage
from voxpipe.ipc import liveness, sockets
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import (Drain, Heartbeat, MergerLost, ProducerLost, Rescan, Reset, Stop, SupervisorReport,
                                  WorkerLost)
from voxpipe.ipc.shm import PoolError, ShmPool, remove_stale_pools
from voxpipe.ipc.topology import RunLayout, make_layout
from voxpipe.stages.runtime import StageArgs


USAGE_SAVE_S = 30.0  # how often voice popularity is written to the state directory
# The longest the supervisor sleeps with nothing to do. It wakes at once for a heartbeat,
# a stage that exits (its process sentinel) or a signal (a wakeup pipe); the rest of its
# duties (touching the endpoint lock, reports, hang checks) run at this pace or slower.
# A daemon that wakes often when idle slows the model calls of a lone request on a small
# machine (docs/benchmarks.md, "A quiet daemon").
IDLE_WAIT_S = 0.5


class SupervisorError(Exception):
    """The daemon cannot start or must stop; the message says why."""


@dataclass
class Stage:
    args: StageArgs
    process: Any = None  # multiprocessing Process
    started: float = 0.0
    last_beat: float = 0.0
    ready: bool = False
    restarts: int = 0
    restart_at: float | None = None
    beating: bool = False  # has sent a heartbeat since it was (re)started
    stats: dict = field(default_factory=dict)
    watch: CpuWatch | None = None  # its CPU time, looked at while it is silent

    @property
    def name(self) -> str:
        return self.args.name


def log(message: str) -> None:
    print(f"voxpipe: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoint = config.endpoint or sockets.default_endpoint()
        self.notifier = Notifier()
        self.mp = multiprocessing.get_context("spawn")
        self.pools: list[ShmPool] = []
        self.stages: dict[str, Stage] = {}
        self.restart_times: collections.deque[float] = collections.deque()
        self.ready = False
        self.stop_requested = False
        self.drain_deadline: float | None = None
        self.drain_started = 0.0
        self.rescan_requested = False
        self.exit_reason: str | None = None
        self._lock_fd = -1
        self._next_touch = 0.0  # time.monotonic() to touch the endpoint lock next (ipc/liveness.py)
        self.layout: RunLayout | None = None
        self.usage = UsageState(config.state_path())
        self._usage_seen: dict[str, int] = {}  # frontend's cumulative per-voice counts last seen
        self.metrics: MetricsExporter | None = None
        self.devices = DeviceProbe(config.gpu.enabled)
        self.allocator = "system"  # the workers' malloc, in words (set when they are planned)
        self._wakeup_fd = self._wakeup_write_fd = -1  # the signal wakeup pipe (see watch_signals)

    def watch_signals(self) -> None:
        """Have signals wake the main loop at once (call from the main thread, after the
        handlers are installed): SIGTERM starts the drain without waiting for a timeout."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        self._wakeup_fd, self._wakeup_write_fd = read_fd, write_fd

    # ---- setup --------------------------------------------------------------------------
    def _plan_workers(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, device, env) per synthesis worker: one per GPU, else N on CPU."""
        gpus: list[Gpu] = discover_gpus() if self.config.gpu.enabled else []
        malloc, self.allocator = allocator.worker_env(self.config.worker.allocator)
        log(f"workers' allocator: {self.allocator}")
        if gpus:
            gpu_cfg = self.config.gpu
            return [(f"w{i}", "cuda", {**malloc, "CUDA_VISIBLE_DEVICES": str(gpu.index),
                                       "PYTORCH_CUDA_ALLOC_CONF": gpu_cfg.alloc_conf,
                                       "VOXPIPE_GPU_MEMORY_FRACTION": str(gpu_cfg.memory_fraction),
                                       "VOXPIPE_TRT_WORKSPACE_MIB": str(gpu_cfg.tensorrt_workspace_mib),
                                       "VOXPIPE_GPU_NAME": gpu.name})
                    for i, gpu in enumerate(gpus)]
        count = self.config.worker.count or max(1, (os.cpu_count() or 1) // self.config.worker.threads)
        threads = str(self.config.worker.threads)
        # PASSIVE: idle OpenMP threads sleep instead of spinning, which on a shared CPU
        # otherwise steals the cores the other workers are using.
        return [(f"w{i}", "cpu", {**malloc, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads,
                                  "OMP_WAIT_POLICY": "PASSIVE"})
                for i in range(count)]

    def _claim_endpoint(self) -> Path:
        """Lock the endpoint so a second daemon cannot steal a live socket; returns the
        directory for this run's private sockets."""
        path = sockets.ipc_path(self.endpoint)
        base = path.parent if path else sockets.runtime_dir()
        base.mkdir(parents=True, exist_ok=True, mode=0o770)
        lock_path = liveness.lock_path(self.endpoint) or base / "tcp.lock"
        # Readable by whoever may reach the socket: clients read the daemon's liveness from it.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SupervisorError(f"another voxpipe daemon is serving {self.endpoint}") from None
        self._lock_fd = fd
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)  # a lock left by an older daemon may be private
        liveness.keep_fresh(fd)
        for stale in base.glob("run-*"):
            self._remove_stale_run_dir(stale)
        return base

    @staticmethod
    def _remove_stale_run_dir(run_dir: Path) -> None:
        lock = run_dir / "lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            shutil.rmtree(run_dir, ignore_errors=True)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(run_dir, ignore_errors=True)
        except OSError:
            pass  # a live daemon on another endpoint owns it
        finally:
            os.close(fd)

    def setup(self) -> None:
        removed = remove_stale_pools()
        if removed:
            log(f"removed {len(removed)} shared-memory segment(s) left by a daemon that is gone")
        base = self._claim_endpoint()
        workers = self._plan_workers()
        shm = self.config.shm
        self.layout = layout = make_layout(base, self.endpoint, [w[0] for w in workers],
                                           shm.worker_pool_mib * 2**20, shm.merger_pool_mib * 2**20,
                                           shm.slot_kib * 1024)
        log(f"starting run {layout.run_id} on {self.endpoint} with {len(workers)} worker(s)")
        layout.run_dir.mkdir(mode=0o700)
        run_lock = os.open(layout.run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(run_lock, fcntl.LOCK_EX)  # held (fd kept open) for the life of the run
        for spec in layout.pools.values():
            try:
                self.pools.append(ShmPool.create(spec))
            except PoolError as exc:
                raise SupervisorError(str(exc)) from None
        self.ctx = zmq.Context(io_threads=1)
        self.control = sockets.make_socket(self.ctx, zmq.ROUTER)
        self.control.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.control.bind(layout.control_endpoint)
        self.beats = sockets.make_socket(self.ctx, zmq.PULL)
        self.beats.bind(layout.heartbeat_endpoint)
        if self.config.metrics_port:
            try:  # the sample directory lives (and dies) with the run directory
                self.metrics = MetricsExporter.start(layout.run_dir, self.config.metrics_address, self.config.metrics_port)
            except MetricsError as exc:
                raise SupervisorError(str(exc)) from None
            log(f"metrics on {self.metrics.url}")
        metrics_env = self.metrics.env if self.metrics else {}
        pid = os.getpid()
        preload = self._preload_list()
        def stage(role: str, name: str, device: str = "cpu", env: dict[str, str] | None = None) -> Stage:
            return Stage(StageArgs(role, name, layout, self.config, pid, {**metrics_env, **(env or {})}, device, preload))
        for s in [stage("merger", "merger"), stage("frontend", "frontend"),
                  *(stage("worker", name, device, env) for name, device, env in workers),
                  *([stage("http", "http")] if self.config.http.bind else [])]:
            self.stages[s.name] = s

    def _preload_list(self) -> list[str]:
        """The config's preload list, then the most used voices that still exist."""
        from voxpipe.stages import families
        from voxpipe.stages.voices import VoiceCatalog

        families.configure(self.config.families)
        known = set(VoiceCatalog(self.config.voices_path()).names())
        wanted = list(self.config.preload)
        wanted += [v for v in self.usage.top(self.config.preload_popular + len(wanted)) if v in known]
        preload = list(dict.fromkeys(wanted))[:len(self.config.preload) + self.config.preload_popular]
        if preload != self.config.preload:
            log(f"preloading {', '.join(preload)}")
        return preload

    def _record_usage(self, stats: dict) -> None:
        """Fold the frontend's cumulative per-voice request counts into the usage state."""
        counts = stats.get("voice_usage")
        if not isinstance(counts, dict):
            return
        increments = {}
        for voice, total in counts.items():
            seen = self._usage_seen.get(voice, 0)
            increments[voice] = total - seen if total >= seen else total  # a restarted frontend counts from 0
        self._usage_seen = dict(counts)
        self.usage.record(increments)

    def save_usage(self) -> None:
        try:
            self.usage.save()
        except OSError as exc:
            log(f"cannot save usage state to {self.usage.path}: {exc}")

    # ---- processes ----------------------------------------------------------------------------
    def _spawn(self, stage: Stage) -> None:
        # Spawned children inherit os.environ as it is at start(): apply the stage's GPU
        # settings there, so they are in place before the child can touch CUDA.
        saved = {k: os.environ.get(k) for k in stage.args.env}
        os.environ.update(stage.args.env)
        try:
            process = self.mp.Process(target=run_stage, args=(stage.args,), name=f"voxpipe-{stage.name}", daemon=False)
            process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        stage.process, stage.started, stage.last_beat = process, time.monotonic(), time.monotonic()
        stage.watch = CpuWatch(process.pid)
        stage.ready, stage.restart_at, stage.beating = False, None, False

    def start(self) -> None:
        self.notifier.send("STATUS=starting: loading voices")
        for stage in self.stages.values():
            self._spawn(stage)
        deadline = time.monotonic() + self.config.supervisor.start_timeout_s
        while not all(s.ready for s in self.stages.values()):
            if self.stop_requested:
                raise SupervisorError("stopped before every stage was ready")
            if time.monotonic() > deadline:
                slow = ", ".join(s.name for s in self.stages.values() if not s.ready)
                raise SupervisorError(f"stages not ready after {self.config.supervisor.start_timeout_s:.0f} s: {slow}")
            self._poll(0.1)  # starting: a short wait keeps readiness prompt
            # A stage that dies while starting is restarted like any other, within the
            # restart budget: a transient failure (a GPU still busy) does not stop us.
            self._check_health()
            if self.exit_reason:
                raise SupervisorError(self.exit_reason)
        self.ready = True
        self._report()
        workers = sum(s.args.role == "worker" for s in self.stages.values())
        http = f", http://{self.config.http.bind}" if self.config.http.bind else ""
        log(f"ready: {workers} worker(s) serving on {self.endpoint}{http} (run {self.layout.run_id})")
        self.notifier.send("READY=1", f"STATUS=serving on {self.endpoint}")

    def _poll(self, timeout_s: float) -> None:
        now = time.monotonic()
        if now >= self._next_touch:  # while starting too: clients of a silent socket look at it
            self._next_touch = now + liveness.TOUCH_EVERY_S
            liveness.keep_fresh(self._lock_fd)
        poller = zmq.Poller()
        poller.register(self.beats, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        if self._wakeup_fd >= 0:
            poller.register(self._wakeup_fd, zmq.POLLIN)
        for stage in self.stages.values():  # readable once the stage's process has exited
            if stage.process is not None and stage.restart_at is None:
                poller.register(stage.process.sentinel, zmq.POLLIN)
        events = dict(poller.poll(int(max(0.0, timeout_s) * 1000)))
        if self._wakeup_fd in events:
            with contextlib.suppress(OSError):
                os.read(self._wakeup_fd, 512)  # the handler already ran; this only woke us
        if self.beats in events:
            for _ in range(1024):
                try:
                    _, beat, _ = sockets.recv(self.beats)
                except zmq.Again:
                    break
                except ProtocolError:
                    continue
                if isinstance(beat, Heartbeat):
                    self._on_beat(beat)
        if self.control in events:
            for _ in range(1024):
                try:
                    self.control.recv_multipart(zmq.NOBLOCK)  # stages send nothing here yet
                except zmq.Again:
                    break

    def _on_beat(self, beat: Heartbeat) -> None:
        stage = self.stages.get(beat.name)
        if stage is None or stage.process is None or beat.pid != stage.process.pid:
            return  # a beat from a process we already replaced
        stage.last_beat = time.monotonic()
        stage.beating = True
        if stage.watch is not None:
            stage.watch.heard()
        if stage.args.role == "frontend" and beat.ready and not stage.ready and stage.restarts:
            # A replaced frontend lost every request in progress: clients resend theirs,
            # so the merger and workers drop what they hold for the old ones.
            for other in self.stages.values():
                if other.args.role in ("merger", "worker"):
                    self._send(other.name, Reset())
        stage.ready = beat.ready
        stage.stats = beat.stats
        if stage.args.role == "frontend":
            self._record_usage(beat.stats)

    def _send(self, name: str, message: object) -> None:
        try:
            sockets.send(self.control, message, identity=name.encode(), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the stage is not connected (yet, or any more)

    # ---- health ------------------------------------------------------------------------------------
    def _check_health(self) -> None:
        now = time.monotonic()
        sup = self.config.supervisor
        for stage in self.stages.values():
            if stage.restart_at is not None:
                if now >= stage.restart_at:
                    self._spawn(stage)
                continue
            alive = stage.process.is_alive()
            # Before its first heartbeat a stage is still importing: give it the start timeout.
            silence_allowed = sup.hang_timeout_s if stage.beating else sup.start_timeout_s
            quiet_for = now - stage.last_beat
            watched = alive and stage.beating and stage.watch is not None and quiet_for <= sup.max_busy_s
            if watched and quiet_for > 2 * self.config.heartbeat_s:
                stage.watch.look(now)  # a beat is missing: the CPU clock's first look
            silent = quiet_for > silence_allowed
            if silent and watched and stage.watch.working(now):
                silent = False  # one call holds its interpreter (an import, a load): working, not hung
            busy_too_long = float(stage.stats.get("busy_for", 0.0)) > sup.max_busy_s
            if alive and not silent and not busy_too_long:
                continue
            if self.stop_requested and not alive:
                # Stopping anyway: a stage that exits now (a signal to the whole group,
                # say) is not restarted; the drain ends when the frontend has no requests.
                stage.restart_at = float("inf")
                continue
            why = ("exited with code %s" % stage.process.exitcode if not alive else
                   "stopped sending heartbeats" if silent else "is stuck in one call")
            self._replace(stage, why)

    def _replace(self, stage: Stage, why: str) -> None:
        now = time.monotonic()
        log(f"{stage.args.role} {stage.name} (pid {stage.process.pid}) {why}; restarting")
        if stage.process.is_alive():
            stage.process.kill()
        stage.process.join(timeout=5)
        if self.metrics:
            self.metrics.process_dead(stage.process.pid)
        stage.ready = False
        stage.restarts += 1
        self.restart_times.append(now)
        sup = self.config.supervisor
        while self.restart_times and now - self.restart_times[0] > sup.restart_window_s:
            self.restart_times.popleft()
        if len(self.restart_times) > sup.restart_budget:
            self.exit_reason = (f"{stage.args.role} {stage.name} {why}: restart budget of {sup.restart_budget} "
                                f"in {sup.restart_window_s:.0f} s spent; stopping")
            return
        dead_pid = stage.process.pid
        if stage.args.role == "worker":
            self._send("frontend", WorkerLost(stage.name))
            self._send("merger", ProducerLost(stage.name, dead_pid))
        elif stage.args.role == "merger":
            generation = stage.args.merger_generation + 1
            for other in self.stages.values():  # a stage started from now on knows it from the start
                other.args.merger_generation = generation
            self._send("frontend", MergerLost(self.layout.MERGER_POOL, dead_pid, generation))
            for name, other in self.stages.items():  # their chunks streamed in parts start over
                if other.args.role == "worker":
                    self._send(name, MergerLost(self.layout.MERGER_POOL, dead_pid, generation))
        quick = now - stage.started < 5.0
        stage.restart_at = now + (min(5.0, 0.2 * 2 ** min(stage.restarts, 5)) if quick else 0.0)
        self.notifier.send(f"STATUS=restarting {stage.name}: {why}")

    def _report(self) -> None:
        processes = [{"role": "supervisor", "name": "supervisor", "pid": os.getpid(), "alive": True, "ready": self.ready,
                      "rss": rss_bytes(os.getpid())}]
        for stage in self.stages.values():
            alive = stage.process is not None and stage.process.is_alive()
            pid = stage.process.pid if stage.process else None
            processes.append({"role": stage.args.role, "name": stage.name,
                              "pid": pid, "alive": alive,
                              "ready": stage.ready, "restarts": stage.restarts, "device": stage.args.device,
                              "rss": rss_bytes(pid) if alive else None, "stats": stage.stats})
        ready, devices = self.ready and self.healthy(), self.devices.snapshot()
        info: dict[str, Any] = {"endpoint": self.endpoint, "devices": devices, "worker_allocator": self.allocator}
        if self.metrics:
            info["metrics"] = self.metrics.url
            self.metrics.publish(processes, devices, ready)
        self._send("frontend", SupervisorReport(ready, self.drain_deadline is not None, processes, info))

    def healthy(self) -> bool:
        """Every stage ready, none being replaced, and each heard from within the hang
        timeout: the condition for systemd watchdog pings."""
        fresh = time.monotonic() - self.config.supervisor.hang_timeout_s
        return all(s.ready and s.restart_at is None and s.last_beat >= fresh for s in self.stages.values())

    # ---- main loop and shutdown ----------------------------------------------------------------------
    def serve(self) -> int:
        watchdog = self.notifier.watchdog_interval()
        next_report = next_watchdog = 0.0
        was_healthy = True  # start() announced READY and "serving"
        next_save = time.monotonic() + USAGE_SAVE_S
        while self.exit_reason is None:
            self._poll(self._idle_wait(next_report, next_watchdog if watchdog else math.inf))
            now = time.monotonic()
            if self.rescan_requested:
                self.rescan_requested = False
                for name in self.stages:
                    self._send(name, Rescan())
            if self.stop_requested and self.drain_deadline is None:
                self.drain_started = now
                self.drain_deadline = now + self.config.limits.drain_timeout_s
                for name, stage in self.stages.items():
                    if stage.args.role in ("frontend", "http"):
                        self._send(name, Drain())
                self.notifier.send("STOPPING=1", "STATUS=draining")
                log("draining: finishing accepted requests")
            if self.drain_deadline is not None and (now >= self.drain_deadline or self._drained()):
                return 0
            self._check_health()
            if now >= next_save:
                next_save = now + USAGE_SAVE_S
                self.save_usage()
            if now >= next_report:
                next_report = now + self.config.heartbeat_s
                self._report()
            healthy = self.healthy()
            if healthy and not was_healthy and self.drain_deadline is None:
                self.notifier.send(f"STATUS=serving on {self.endpoint}")  # recovered from a restart
            was_healthy = healthy
            if watchdog and now >= next_watchdog and healthy:
                next_watchdog = now + watchdog
                self.notifier.send("WATCHDOG=1")
        log(self.exit_reason)
        return 1

    def _idle_wait(self, *due: float) -> float:
        """Seconds until the main loop has something to do by the clock: a report, a
        watchdog ping, touching the endpoint lock, a stage's delayed restart."""
        restarts = [s.restart_at for s in self.stages.values() if s.restart_at is not None]
        soonest = min([*due, self._next_touch, *restarts, time.monotonic() + IDLE_WAIT_S])
        return max(0.0, soonest - time.monotonic())

    def _drained(self) -> bool:
        """True once the frontend, in a heartbeat sent after draining began, has no requests."""
        frontend = self.stages["frontend"]
        if not frontend.process.is_alive():
            return True
        return frontend.last_beat > self.drain_started + self.config.heartbeat_s and frontend.stats.get("active", 1) == 0

    def shutdown(self) -> None:
        self.save_usage()
        # The frontend first: it answers every request still open `shutting_down` before
        # its socket closes, and the HTTP stage, still up, passes those answers on.
        frontend = self.stages.get("frontend")
        if frontend is not None and frontend.process is not None:
            self._send("frontend", Stop())
            frontend.process.join(timeout=3.0)
        for name in self.stages:
            self._send(name, Stop())
        deadline = time.monotonic() + 3.0
        for stage in self.stages.values():
            if stage.process is not None:
                stage.process.join(timeout=max(0.0, deadline - time.monotonic()))
                if stage.process.is_alive():
                    stage.process.kill()
                    stage.process.join(timeout=2)
        if hasattr(self, "ctx"):
            self.control.close(0)
            self.beats.close(0)
            self.ctx.term()
        for pool in self.pools:
            pool.unlink()
            pool.close()
        if self.metrics:
            self.metrics.close()
        self.devices.close()
        if self.layout is not None:
            shutil.rmtree(self.layout.run_dir, ignore_errors=True)
        if self._wakeup_fd >= 0:
            signal.set_wakeup_fd(-1)
            for fd in (self._wakeup_fd, self._wakeup_write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wakeup_fd = self._wakeup_write_fd = -1
        path = sockets.ipc_path(self.endpoint)
        if path is not None and self._lock_fd >= 0:
            for leftover in (path, liveness.lock_path(self.endpoint)):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def run_supervisor(config: Config) -> int:
    """`voxpipe serve`: returns the process exit code."""
    set_title("voxpipe: supervisor")
    supervisor = Supervisor(config)

    def on_stop(signum: int, _frame: Any) -> None:
        if supervisor.stop_requested and signum == signal.SIGINT:
            supervisor.exit_reason = "interrupted twice; stopping without draining"
        supervisor.stop_requested = True

    def on_reload(_signum: int, _frame: Any) -> None:
        supervisor.rescan_requested = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    supervisor.watch_signals()
    try:
        supervisor.setup()
        supervisor.start()
        code = supervisor.serve()
    except SupervisorError as exc:
        log(f"error: {exc}")
        code = 1
    finally:
        supervisor.shutdown()
    log("stopped")
    return code
