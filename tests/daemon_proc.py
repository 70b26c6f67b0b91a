"""Start and stop a real voxpipe daemon as a subprocess for tests."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from voxpipe.bench.daemon import fresh_status
from voxpipe.bench.texts import DEFAULT_TEXTS_DIR
from voxpipe.ipc.client import Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.shm import SHM_DIR, PREFIX

ROOT = Path(__file__).resolve().parents[1]
BENCH = DEFAULT_TEXTS_DIR  # the benchmark texts, shipped in the package (voxpipe/bench/data/)


def write_config(path: Path, endpoint: str, **sections: dict) -> Path:
    """A TOML config with the given top-level keys and [section] tables."""
    lines = [f'endpoint = "{endpoint}"']
    if "state_dir" not in sections:
        lines.append(f'state_dir = "{path.parent / "state"}"')
    tables = []
    for key, value in sections.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]")
            tables.extend(f"{k} = {_toml(v)}" for k, v in value.items())
        else:
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines + tables) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


class Daemon:
    def __init__(self, workdir: Path, workers: int = 2, extra_args: list[str] | None = None, **config: object) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.endpoint = f"ipc://{workdir / 'vp.sock'}"
        self.config_path = write_config(workdir / "voxpipe.toml", self.endpoint, **config)
        self.log_path = workdir / "daemon.log"
        self.args = [sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--config", str(self.config_path),
                     "--workers", str(workers), *(extra_args or [])]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: float = 120.0) -> "Daemon":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with Client(self.endpoint, connect_timeout=1.0) as client:
                    if client.status(timeout=2.0).get("ready"):
                        return self
            except VoxpipeError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"daemon not ready in {wait} s:\n{self.log()}")

    def client(self, **kwargs: object) -> Client:
        return Client(self.endpoint, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The supervisor and every stage process (the daemon's own session)."""
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "-s", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole daemon: supervisor and stages at once."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_daemon(workdir: Path, workers: int = 1, http: dict | None = None, **config: object) -> Iterator[Daemon]:
    """A running daemon serving HTTP on a free port (`daemon.url`), stopped on exit;
    `http`: more [http] settings besides the bind."""
    port = free_port()
    daemon = Daemon(workdir, workers=workers, http={"bind": f"127.0.0.1:{port}", **(http or {})}, **config)
    daemon.url = f"http://127.0.0.1:{port}"
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def settled_status(daemon: Daemon, timeout: float = 60.0) -> dict:
    """The daemon's status once every stage's reported stats were made after this call
    began (their `stats_at`): the counters that travel by heartbeat then count everything
    the daemon finished before the call. Waits on that state, not on a guess of time."""
    since = time.monotonic()
    with Client(daemon.endpoint) as client:
        status, stale = fresh_status(client.status, since, timeout)
    assert not stale, f"no fresh stats from {stale} in {timeout} s"
    return status


def wait_idle(daemon: Daemon, timeout: float = 60.0) -> dict:
    """The daemon's status once no request is active, no chunk is queued and the HTTP
    stage (if any) holds no stream: every request a test made is answered or cancelled."""
    deadline = time.monotonic() + timeout
    with Client(daemon.endpoint) as client:
        while True:
            status = client.status()
            streams = sum((p.get("stats") or {}).get("streams", 0) for p in status["processes"] if p["role"] == "http")
            if status["active_requests"] == 0 and status["queues"]["queued"] == 0 and streams == 0:
                return status
            assert time.monotonic() < deadline, f"requests still running after {timeout} s: {status}"
            time.sleep(0.05)


def stage_pids(status: dict) -> dict[str, tuple[int, int]]:
    """Each stage's (pid, restarts): what changes when a stage is replaced."""
    return {p["name"]: (p["pid"], p.get("restarts", 0)) for p in status["processes"] if p["role"] != "supervisor"}


def restored(daemon: Daemon, timeout: float = 60.0) -> dict:
    """The daemon's status once it is whole again after a stage was killed, stopped or
    restarted: the daemon says ready, every stage is alive and ready and has made
    figures since this call began (a stopped or replaced process cannot), and no request
    is left over. Waits on that state; a status query that finds no frontend (it is being
    replaced) is retried."""
    since = time.monotonic()
    deadline = since + timeout
    status: dict = {}
    while True:
        try:
            with Client(daemon.endpoint, connect_timeout=2.0) as client:
                status = client.status(timeout=2.0)
        except VoxpipeError:
            status = {}
        stages = [p for p in status.get("processes", []) if p.get("role") != "supervisor"]
        whole = status.get("ready") and stages and all(
            p["alive"] and p["ready"] and (p.get("stats") or {}).get("stats_at", 0.0) >= since for p in stages)
        if whole and status["active_requests"] == 0 and status["queues"]["queued"] == 0:
            return status
        assert daemon.proc is not None and daemon.proc.poll() is None, f"the daemon exited:\n{daemon.log()}"
        assert time.monotonic() < deadline, f"the daemon did not recover in {timeout} s: {status}"
        time.sleep(0.05)


def rescan_voices(daemon: Daemon, until, timeout: float = 30.0) -> dict:
    """Have every stage rescan the voices directory now, as `systemctl reload` does: SIGHUP
    to the supervisor, which sends each stage a Rescan message. Returns the status once
    `until(status)` holds (the frontend's catalog shows the change), instead of waiting
    out the catalog's own once-a-second look at the directory."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    with Client(daemon.endpoint) as client:
        while not until(status := client.status()):
            assert time.monotonic() < deadline, f"the rescan did not show in {timeout} s: {status}"
            time.sleep(0.05)
    return status


def our_segments() -> set[str]:
    return {p.name for p in SHM_DIR.glob(f"{PREFIX}*")}


def bench_texts() -> list[tuple[str, str]]:
    rows = []
    for line in (BENCH / "texts_en.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            cls, text = line.split("\t", 1)
            rows.append((cls, text))
    return rows


def longform() -> str:
    return (BENCH / "longform_en.txt").read_text(encoding="utf-8")


def same_audio(a, b, steps: int = 4) -> bool:
    """The same samples, allowing `steps` int16 steps apiece: the onnx engine's thread count
    follows how many workers are busy, and sums taken in another order can move a sample
    across a rounding step. Lost or repeated audio changes the length, or moves whole
    stretches far beyond that."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)
    return len(a) == len(b) and (len(a) == 0 or int(np.abs(a - b).max()) <= steps)
