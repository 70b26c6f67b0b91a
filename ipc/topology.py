"""Where everything of one daemon run lives: socket endpoints and shared-memory pools.

Built once by the supervisor and handed (pickled by `spawn`) to every stage, so no
stage invents a path of its own.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.ipc.shm import PoolSpec, pool_path


def new_run_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class RunLayout:
    run_id: str
    run_dir: Path  # private directory for internal sockets, removed at exit
    client_endpoint: str
    pools: dict[str, PoolSpec] = field(default_factory=dict)

    def _ipc(self, name: str) -> str:
        return f"ipc://{self.run_dir / name}"

    @property
    def workers_endpoint(self) -> str:  # frontend ROUTER <- worker DEALERs
        return self._ipc("workers.sock")

    @property
    def merger_endpoint(self) -> str:  # merger PULL <- workers and frontend
        return self._ipc("merger.sock")

    @property
    def frontend_in_endpoint(self) -> str:  # frontend PULL <- merger
        return self._ipc("frontend-in.sock")

    @property
    def control_endpoint(self) -> str:  # supervisor ROUTER <-> stage DEALERs
        return self._ipc("control.sock")

    @property
    def heartbeat_endpoint(self) -> str:  # supervisor PULL <- stage heartbeat threads
        return self._ipc("heartbeat.sock")

    @staticmethod
    def worker_pool_name(worker: str) -> str:
        return worker

    MERGER_POOL = "merger"


def make_layout(run_dir_base: Path, client_endpoint: str, workers: list[str], worker_pool_bytes: int,
                merger_pool_bytes: int, slot_bytes: int) -> RunLayout:
    run_id = new_run_id()
    run_dir = run_dir_base / f"run-{run_id}"
    pools = {}
    for edge, size in [*((w, worker_pool_bytes) for w in workers), (RunLayout.MERGER_POOL, merger_pool_bytes)]:
        pools[edge] = PoolSpec(edge, str(pool_path(run_id, edge)), slot_bytes, max(1, size // slot_bytes))
    return RunLayout(run_id, run_dir, client_endpoint, pools)
