"""The supervisor's side of metrics: the per-run directory the stages write their samples
to, and the HTTP endpoint that serves /metrics in the Prometheus text format.

A scrape sums the stages' sample files (prometheus_client's MultiProcessCollector) and
adds what the supervisor itself knows, from the process table it last published (so the
HTTP thread never touches process handles the main loop owns).
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Iterable

from voxpipe.metrics.definitions import MULTIPROC_ENV, supervisor_families


class MetricsError(Exception):
    """Metrics were asked for but cannot be served; the message says why."""


class _SupervisorCollector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: list[dict[str, Any]] = []
        self._devices: list[dict[str, Any]] = []
        self._ready = False

    def publish(self, processes: list[dict[str, Any]], devices: list[dict[str, Any]], ready: bool) -> None:
        with self._lock:
            self._processes, self._devices, self._ready = processes, devices, ready

    def collect(self) -> Iterable[Any]:
        with self._lock:
            processes, devices, ready = self._processes, self._devices, self._ready
        return supervisor_families(processes, devices, ready)


class MetricsExporter:
    def __init__(self, directory: Path, address: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.multiprocess import MultiProcessCollector
        except ImportError:
            raise MetricsError("metrics_port is set but prometheus_client is not installed "
                               "(pip install prometheus-client)") from None
        self.directory = directory
        directory.mkdir(mode=0o700)
        self.registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self.registry, path=str(directory))
        self._collector = _SupervisorCollector()
        self.registry.register(self._collector)
        try:
            self._server, self._thread = start_http_server(port, address, self.registry)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise MetricsError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}") from None
        host = f"[{address}]" if ":" in address else address
        self.url = f"http://{host}:{self._server.server_port}/metrics"

    @classmethod
    def start(cls, run_dir: Path, address: str, port: int) -> "MetricsExporter":
        return cls(run_dir / "metrics", address, port)

    @property
    def env(self) -> dict[str, str]:
        """What every stage's environment needs so its samples land in our directory."""
        return {MULTIPROC_ENV: str(self.directory)}

    def publish(self, processes: list[dict[str, Any]], devices: list[dict[str, Any]], ready: bool) -> None:
        self._collector.publish(processes, devices, ready)

    def process_dead(self, pid: int | None) -> None:
        """Drop a dead process's live gauges; its counters and histograms stay summed in."""
        if pid:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.directory))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
        shutil.rmtree(self.directory, ignore_errors=True)
