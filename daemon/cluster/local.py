"""A Ray cluster on this machine for tests, benchmarks and trials: a head and N more
nodes started with `ray start`, each with a small CPU count, all in a private temp
folder so that tearing it down touches only its own processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # Small machines: fewer idle workers kept warm, and no pre-started ones.
    "RAY_num_prestart_python_workers": "0",
    "RAY_worker_maximum_startup_concurrency": "2",
    # Serve's controller kills a proxy that has not said ready within 5 s (then 10 s, ...),
    # and serve.start fails with it; a proxy's worker starting on a busy small machine
    # can take longer than that.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}
MARK_ENV = "VOXPIPE_LOCAL_RAY"  # set in every process of a local cluster: how stop() finds them

# `ray start` swaps a loopback --node-ip-address for the machine's outward address; a
# cluster of one machine's nodes stays on 127.0.0.1 (nothing leaves the loopback
# interface), as Ray's own multi-node test clusters do.
RAY_START = ("import sys; import ray._private.services as services; "
             "services.resolve_ip_for_localhost = lambda host: host; "
             "from ray.scripts.scripts import main; sys.exit(main())")


class LocalClusterError(RuntimeError):
    """`ray` is missing, or a node would not start; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(port: int) -> None:
    """Serve's HTTP proxy on 127.0.0.1:port, one on the head node only. By default Serve
    starts a proxy on every node holding a replica, all bound to the same port
    (SO_REUSEPORT): on one machine the kernel then hands a connection to any of them,
    including one started a moment ago that has not yet heard of the application's
    routes and answers 404."""
    from ray import serve

    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})


def run_app(app: Any, name: str, route_prefix: str, port: int, timeout: float = 60.0) -> None:
    """serve.run, then wait until the proxy routes route_prefix: serve.run returns when the
    application runs, and the proxy learns its route a moment later."""
    from ray import serve

    serve.run(app, name=name, route_prefix=route_prefix)
    wait_for_route(port, route_prefix, timeout)


def wait_for_route(port: int, route_prefix: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/routes", timeout=5) as reply:
                seen = json.loads(reply.read())
            if isinstance(seen, dict) and route_prefix in seen:
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            seen = exc
        time.sleep(0.2)
    raise LocalClusterError(f"Serve's proxy did not route {route_prefix} within {timeout:.0f} s (last: {seen!r})")


def keep_on_loopback() -> None:
    """In this process, let 127.0.0.1 mean 127.0.0.1 to Ray (see RAY_START)."""
    import ray._private.services as services

    services.resolve_ip_for_localhost = lambda host: host


def _check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise LocalClusterError("ray is not installed: pip install 'voxpipe[cluster]'") from None


def _state(proc_dir: Path) -> bytes:
    """A process's one-letter state (Z: a zombie, already dead)."""
    stat = (proc_dir / "stat").read_bytes()
    return stat[stat.rindex(b")") + 2:][:1]


class LocalCluster:
    """`with LocalCluster(nodes=3) as cluster:` a head plus nodes-1 workers on 127.0.0.1."""

    def __init__(self, nodes: int = 3, cpus_per_node: float = 1, memory_mib_per_node: int = 0,
                 object_store_mib: int = 96, root: Path | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"nodes: {nodes} must be at least 1")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.memory_mib_per_node = memory_mib_per_node
        self.object_store_mib = object_store_mib
        base = Path(root) if root else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        # Ray's socket paths must stay short (AF_UNIX): keep the temp dir name brief.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vpr-", dir=base))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **RAY_ENV, MARK_ENV: str(self.temp_dir)}
        _check_ray()

    def _start_node(self, head: bool) -> None:
        self._finish(self._launch(head), head)

    def _launch(self, head: bool) -> subprocess.Popen[str]:
        args = [sys.executable, "-c", RAY_START, "start", "--disable-usage-stats", f"--num-cpus={self.cpus_per_node}", "--num-gpus=0",
                f"--object-store-memory={self.object_store_mib * 1024 * 1024}", "--node-ip-address=127.0.0.1"]
        if self.memory_mib_per_node:
            args.append(f"--memory={self.memory_mib_per_node * 1024 * 1024}")
        if head:
            args += ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}"]
        else:
            args += [f"--address={self.address}"]
        return subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def _finish(proc: subprocess.Popen[str], head: bool) -> None:
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise LocalClusterError(f"`ray start{' --head' if head else ''}` failed ({proc.returncode}):\n"
                                    f"{out[-2000:]}\n{err[-2000:]}")

    def start(self) -> "LocalCluster":
        """Start the nodes and connect this process to the cluster (ray.init)."""
        try:
            self._start_node(head=True)
            self.connect(nodes=1)
            for joined in range(2, self.nodes + 1):
                self._join(joined)
            self.connect()
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self, expected: int, tries: int = 2) -> None:
        """Add a node. `ray start` gives a node 30 s to register, which a loaded machine
        can miss: then wait for it to register late, or start another."""
        for attempt in range(tries):
            try:
                self._start_node(head=False)
                return
            except LocalClusterError:
                try:
                    self.connect(nodes=expected, timeout=30.0)
                    return
                except LocalClusterError:
                    if attempt == tries - 1:
                        raise

    def alive_nodes(self) -> int:
        import ray

        return sum(1 for node in ray.nodes() if node["Alive"])

    def connect(self, nodes: int | None = None, timeout: float = 60.0) -> None:
        """ray.init to this cluster, once `nodes` (default: all) have joined."""
        import ray

        if not ray.is_initialized():
            keep_on_loopback()
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        want = self.nodes if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < want:
            if time.monotonic() > deadline:
                raise LocalClusterError(f"only {self.alive_nodes()} of {want} Ray nodes came up in {timeout:.0f} s")
            time.sleep(0.5)

    def pids(self) -> list[int]:
        """Every live process of this cluster: all carry MARK_ENV naming its temp dir
        (Ray renames many of them, so command lines cannot tell)."""
        mark = f"{MARK_ENV}={self.temp_dir}".encode() + b"\0"
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "environ").read_bytes() and b"Z" != _state(entry):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every process of this cluster (and only those): SIGTERM, then SIGKILL."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
