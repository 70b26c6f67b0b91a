"""The workers' malloc: the supervisor preloads tcmalloc or jemalloc into synthesis
workers only, where the library is installed, and says what they run with."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from voxpipe.daemon import allocator


def test_choices_map_to_an_environment(tmp_path, monkeypatch):
    assert allocator.worker_env("system") == ({}, "system")
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_bytes(b"")
    monkeypatch.setattr(allocator, "SEARCH", (str(tmp_path),))
    env, words = allocator.worker_env("jemalloc", {"LD_PRELOAD": "/opt/other.so"})
    assert env == {"LD_PRELOAD": f"{fake} /opt/other.so"} and words == f"jemalloc ({fake})"
    env, words = allocator.worker_env("tcmalloc", {})
    assert env == {} and words.startswith("system (tcmalloc not found: apt-get install libtcmalloc-minimal4")
    monkeypatch.setattr(allocator, "AUTO", "jemalloc")
    assert allocator.worker_env("auto", {})[0] == {"LD_PRELOAD": str(fake)}
    with pytest.raises(ValueError, match="worker.allocator 'mimalloc'"):
        allocator.worker_env("mimalloc")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(allocator.find("tcmalloc") is None, reason="tcmalloc is not installed (libtcmalloc-minimal4)")
def test_the_preload_reaches_the_worker_process_only(tmp_path, tmp_path_factory):
    with Daemon(tmp_path, workers=1, extra_args=["--engine", "null"], worker={"allocator": "tcmalloc"}) as daemon:
        with daemon.client() as client:
            status = client.status()
            assert client.synthesize("Hello there.").duration > 0
            rows = {p["role"]: p for p in status["processes"]}
            assert status["worker_allocator"].startswith("tcmalloc (")
            assert "libtcmalloc" in _maps(rows["worker"]["pid"])
            assert "libtcmalloc" not in _maps(rows["frontend"]["pid"])
            assert "libtcmalloc" not in _maps(rows["merger"]["pid"])
    # A folder of its own, not one under tmp_path: ipc socket paths hold at most 107 bytes.
    with Daemon(tmp_path_factory.mktemp("plain"), workers=1, extra_args=["--engine", "null"], worker={"allocator": "system"}) as daemon:
        with daemon.client() as client:
            status = client.status()
            worker = next(p for p in status["processes"] if p["role"] == "worker")
            assert "libtcmalloc" not in _maps(worker["pid"]) and status["worker_allocator"] == "system"
