"""The per-worker voice cache: exactly LRU, bounded in bytes; preloading by config and
by recorded popularity, which survives a restart."""
from __future__ import annotations

import time

import pytest

from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice
from tests.daemon_proc import Daemon, settled_status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # each test starts daemons of its own config


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    directory = tmp_path_factory.mktemp("voices")
    sizes = [write_random_piper_voice(directory, name, seed=i).stat().st_size for i, name in enumerate("abc")]
    return directory, max(sizes)


def worker_stats(daemon: Daemon) -> dict:
    with daemon.client() as client:
        return next(p["stats"] for p in client.status()["processes"] if p["role"] == "worker")


def settled_cache(daemon: Daemon, requests: int) -> dict:
    """Worker cache counters once the heartbeat carries all `requests` lookups."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cache = worker_stats(daemon).get("cache", {})
        if cache.get("hits", 0) + cache.get("misses", 0) >= requests:
            return cache
        time.sleep(0.1)
    raise AssertionError("worker stats never caught up")


def test_two_voice_capacity_three_voices_in_turn_is_exactly_lru(tmp_path, voices):
    directory, size = voices
    config = {"voices_dir": str(directory), "preload": [], "preload_popular": 0,
              "worker": {"voice_cache_mib": 2.5 * size / 2**20, "max_threads": 1}}  # one onnxruntime session a voice
    with Daemon(tmp_path, workers=1, **config) as daemon, daemon.client() as client:
        # a miss, b miss, a hit, c miss (evicts b), b miss (evicts a), c hit
        for voice in "abacbc":
            client.synthesize("Hi.", voice)
        cache = settled_cache(daemon, 6)
        assert (cache["hits"], cache["misses"], cache["loads"], cache["evictions"]) == (2, 4, 4, 2)
        assert sorted(worker_stats(daemon)["voices"]) == ["b", "c"]


def test_preload_list_and_popular_voices_load_before_ready_and_usage_survives(tmp_path, voices):
    directory, _ = voices
    config = {"voices_dir": str(directory), "preload": ["a"], "preload_popular": 1,
              "state_dir": str(tmp_path / "state")}
    with Daemon(tmp_path / "one", workers=1, **config) as daemon:
        assert worker_stats(daemon)["voices"] == ["a"]
        with daemon.client() as client:
            for voice in "ccb":
                client.synthesize("Hi.", voice)
        settled_status(daemon)  # a heartbeat has carried the usage counts to the supervisor
    assert (tmp_path / "state" / "usage.json").is_file()
    with Daemon(tmp_path / "two", workers=1, **config) as daemon:
        # ready means preloaded: the config's voice and the most used one are resident
        assert sorted(worker_stats(daemon)["voices"]) == ["a", "c"]
        assert worker_stats(daemon)["cache"]["hits"] == 0
