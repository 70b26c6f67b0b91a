"""One voxpipe daemon owned by a replica: `voxpipe serve` as a child process on the
replica's node, on a private ipc socket, dying with the replica."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from voxpipe.ipc.client import AsyncClient
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.procutil import die_with_parent

ENGINES = ("onnx", "torch", "tensorrt", "null")
PID_FILE = "daemon.pid"
IPC_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1


class DaemonSettingsError(ValueError):
    """A replica's daemon settings are not usable; the message names the field."""


@dataclass(frozen=True)
class DaemonSettings:
    """How each replica starts its daemon (the `daemon` section of the app's arguments)."""

    engine: str = "onnx"
    workers: int = 1  # synthesis workers (one per GPU, or N on CPU)
    voices_dir: str = ""  # the same voices on every node (a shared volume or an image layer)
    config: str = ""  # a voxpipe TOML for everything else (its endpoint and http bind are overridden)
    work_root: str = ""  # where each replica makes its working folder; empty: the system's temp dir
    ready_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the daemon

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "DaemonSettings":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DaemonSettingsError(f"daemon: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for f in fields(cls):  # `serve run ... daemon.workers=2` passes strings
            value = data.get(f.name)
            if isinstance(value, str) and f.type in ("int", "float"):
                try:
                    data[f.name] = int(value) if f.type == "int" else float(value)
                except ValueError:
                    raise DaemonSettingsError(f"daemon.{f.name}: {value!r} is not a number") from None
        settings = cls(**data)
        settings.check()
        return settings

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise DaemonSettingsError(f"daemon.engine: {self.engine!r} is not one of {', '.join(ENGINES)}")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 256:
            raise DaemonSettingsError(f"daemon.workers: {self.workers!r} must be an integer from 1 to 256")
        if not self.ready_timeout_s > 0:
            raise DaemonSettingsError(f"daemon.ready_timeout_s: {self.ready_timeout_s!r} must be > 0")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise DaemonSettingsError("daemon.env: keys and values must be strings")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arm_child() -> None:
    """In the child before exec: its own session (signals to the replica's group do not
    reach it twice) and SIGKILL when the replica's process dies."""
    parent = os.getppid()
    os.setsid()
    die_with_parent(parent)


class NodeDaemon:
    def __init__(self, settings: DaemonSettings, tag: str) -> None:
        self.settings = settings
        root = Path(settings.work_root or tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        # The daemon's ipc sockets go in here, and a socket path has at most 107 bytes.
        longest = len(str(root.resolve())) + len(f"/vpr-{tag[:12]}-12345678/run-12345678/frontend-in.sock")
        if longest > IPC_PATH_MAX:
            raise DaemonSettingsError(f"daemon.work_root: {root} is too long a path for the daemon's ipc sockets "
                                      f"({longest} > {IPC_PATH_MAX} bytes); choose a shorter one")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"vpr-{tag[:12]}-", dir=root))
        self.endpoint = f"ipc://{self.workdir / 'vp.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        s = self.settings
        if s.config:
            config = Path(s.config).expanduser()  # the endpoint below overrides its own
        else:
            config = self.workdir / "voxpipe.toml"
            config.write_text(f'endpoint = "{self.endpoint}"\nstate_dir = "{self.workdir / "state"}"\n',
                              encoding="utf-8")
        args = [sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--config", str(config),
                "--endpoint", self.endpoint, "--engine", s.engine, "--workers", str(s.workers), "--http", ""]
        if s.voices_dir:
            args += ["--voices-dir", s.voices_dir]
        return args

    async def start(self) -> None:
        """Start `voxpipe serve` and wait until it says it is ready."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.settings.env)
        log = open(self.workdir / "daemon.log", "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_arm_child)
        finally:
            log.close()
        (self.workdir / PID_FILE).write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the daemon was not ready in {self.settings.ready_timeout_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            if await self._ready():
                return
            await asyncio.sleep(0.2)

    async def _ready(self) -> bool:
        client = AsyncClient(self.endpoint)
        try:
            await client.connect(timeout=1.0)
            return bool((await client.status(timeout=2.0)).get("ready"))
        except (VoxpipeError, asyncio.TimeoutError):
            return False
        finally:
            await client.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def wait_exit(self, poll_s: float = 0.1) -> int:
        """Return the daemon's exit status once it has exited (polled: the replica's loop
        is not the one that can reap children through asyncio's watcher)."""
        assert self.proc is not None
        while self.proc.poll() is None:
            await asyncio.sleep(poll_s)
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.workdir / "daemon.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the daemon drains and exits), then SIGKILL if it takes too long; the
        working folder goes with it."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def daemon_pids(work_root: Path) -> list[int]:
    """The pids of the live daemons replicas started under `work_root` (for fault drills)."""
    pids = []
    for pid_file in sorted(work_root.glob(f"vpr-*/{PID_FILE}")):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            continue
        pids.append(pid)
    return pids
