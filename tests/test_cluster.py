"""The fleet's pieces that need no Ray cluster: its arguments, the deploy manifests
(checked against Serve's own config schema and KubeRay's RayService shape), the null
engine's audio and emulated GPU time and voice loads, the routing rule, and the client
library's resume, which the fleet
relies on (a real daemon: a resumed request gets exactly the rest of the audio)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from voxpipe.daemon.cluster.affinity import ReplicaLoad, power_of_two, rank_replicas
from voxpipe.daemon.cluster.node_daemon import DaemonSettings, DaemonSettingsError
from voxpipe.ipc.client import AsyncClient
from voxpipe.stages.engines.base import EngineError, EngineSettings
from voxpipe.stages.families.piper.engines.null_engine import (EMULATED_GPU_ENV, EMULATED_LOAD_ENV,
                                                                EMULATED_VOICE_MIB_ENV, NullEngine, emulated_gpu_s,
                                                                emulated_load_s, null_audio)
from voxpipe.stages.voices import VoiceSpec
from voxpipe.stages.worker.voice_cache import VoiceCache

from tests.daemon_proc import Daemon

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


# ---- arguments ---------------------------------------------------------------------

def test_daemon_settings_refuse_bad_values_by_name() -> None:
    assert DaemonSettings.from_dict({"engine": "null", "workers": 2}).workers == 2
    for bad, field in (({"engine": "nope"}, "daemon.engine"), ({"workers": 0}, "daemon.workers"),
                       ({"colour": "red"}, "unknown setting"), ({"env": {"A": 1}}, "daemon.env")):
        with pytest.raises(DaemonSettingsError, match=field):
            DaemonSettings.from_dict(bad)


def test_fleet_args_parse_dotted_command_line_values() -> None:
    pytest.importorskip("ray.serve")
    from voxpipe.daemon.cluster.app import FleetArgs, FleetArgsError

    args = FleetArgs.parse({"daemon.engine": "null", "daemon.workers": "2", "replicas": "3", "routing": "random"})
    assert DaemonSettings.from_dict(args.daemon) == DaemonSettings(engine="null", workers=2)
    assert args.replicas == 3 and args.routing == "random"
    for bad, message in (({"routing": "round-robin"}, "routing"), ({"replicas": "0"}, "replicas"),
                         ({"replicas": "many"}, "not an integer"), ({"colour": 1}, "unknown argument"),
                         ({"http": {"max_streams": 4, "speed": 2}}, "http: unknown limit"),
                         ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "autoscaling"),
                         ({"daemon": {"engine": "nope"}}, "daemon.engine"),
                         ({"daemon.workers": "two"}, "daemon.workers"),
                         ({"affinity_slack": "-1"}, "affinity_slack"),
                         ({"routing_stats_period_s": "0"}, "routing_stats_period_s")):
        with pytest.raises((FleetArgsError, DaemonSettingsError), match=message):
            FleetArgs.parse(bad)


# ---- deploy manifests ----------------------------------------------------------------

def _yaml(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _check_serve_config(config: dict) -> None:
    """Valid for Serve itself, and its voxpipe application's args valid for the builder."""
    pytest.importorskip("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    from voxpipe.daemon.cluster.app import FleetArgs

    schema = ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(config)
    apps = {app.name: app for app in schema.applications}
    app = apps["voxpipe"]
    assert app.import_path == "voxpipe.daemon.cluster.app:build"
    module, _, name = app.import_path.partition(":")
    assert callable(getattr(__import__(module, fromlist=[name]), name))
    args = FleetArgs.parse(app.args)
    assert args.autoscaling["max_replicas"] >= args.autoscaling["min_replicas"] >= 1
    assert args.autoscaling["target_ongoing_requests"] <= args.max_ongoing_requests


def _pinned_ray() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return text.split('"ray[serve]==', 1)[1].split('"', 1)[0]


def test_rayservice_manifest_has_what_kuberay_expects() -> None:
    yaml = pytest.importorskip("yaml")
    service = _yaml(DEPLOY / "voxpipe-rayservice.yaml")
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert service["metadata"]["name"]
    spec = service["spec"]
    assert isinstance(spec["serveConfigV2"], str), "KubeRay takes the Serve config as a YAML string"
    _check_serve_config(yaml.safe_load(spec["serveConfigV2"]))
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == _pinned_ray(), "the image's Ray must be the version voxpipe pins"
    head = cluster["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    containers = head["template"]["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers)
    groups = cluster["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert "rayStartParams" in group and all(isinstance(v, str) for v in group["rayStartParams"].values())
        worker = group["template"]["spec"]
        mounts = {m["name"] for c in worker["containers"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in worker.get("volumes", [])}, "every mount names a volume"
    # Workers can hold as many replicas as the autoscaler may ask for.
    args = yaml.safe_load(spec["serveConfigV2"])["applications"][0]["args"]
    gpus_per_replica = args["replica_resources"].get("num_gpus", 0)
    if gpus_per_replica:
        gpus = sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) * g["maxReplicas"]
                   for g in groups for c in g["template"]["spec"]["containers"])
        assert gpus >= args["autoscaling"]["max_replicas"] * gpus_per_replica


def test_serve_config_file_matches_the_rayservice() -> None:
    yaml = pytest.importorskip("yaml")
    config = _yaml(DEPLOY / "serve-config.yaml")
    _check_serve_config(config)
    service = yaml.safe_load(_yaml(DEPLOY / "voxpipe-rayservice.yaml")["spec"]["serveConfigV2"])
    assert config["applications"] == service["applications"]


# ---- null engine ---------------------------------------------------------------------

def test_null_engine_audio_is_deterministic_and_not_silent() -> None:
    ids = np.array([1, 5, 9, 2, 0], dtype=np.int64)
    a, b = null_audio(ids, 1.0), null_audio(ids.copy(), 1.0)
    assert np.array_equal(a, b) and np.abs(a).max() > 0
    assert not np.array_equal(a, null_audio(np.array([1, 5, 9, 3, 0]), 1.0))
    assert len(null_audio(ids, 2.0)) == 2 * len(a)


def test_emulated_gpu_time_reads_milliseconds_and_refuses_nonsense() -> None:
    assert emulated_gpu_s({}) == 0.0
    assert emulated_gpu_s({EMULATED_GPU_ENV: "40"}) == pytest.approx(0.04)
    for bad in ("fast", "-1", "1e9"):
        with pytest.raises(EngineError, match=EMULATED_GPU_ENV):
            emulated_gpu_s({EMULATED_GPU_ENV: bad})


def test_emulated_voice_loads_fill_the_worker_cache_like_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emulated_load_s({}) == 0.0 and emulated_load_s({EMULATED_LOAD_ENV: "2000"}) == pytest.approx(2.0)
    with pytest.raises(EngineError, match=EMULATED_LOAD_ENV):
        emulated_load_s({EMULATED_LOAD_ENV: "slow"})
    monkeypatch.setenv(EMULATED_VOICE_MIB_ENV, "100")
    monkeypatch.setenv(EMULATED_LOAD_ENV, "1")
    cache = VoiceCache(NullEngine(EngineSettings()), capacity_bytes=200 * 2**20)  # room for two voices
    specs = {n: VoiceSpec(n, "piper", 16000, (Path(f"/voices/{n}.onnx"),)) for n in "abc"}
    for name in "abab":
        cache.get(specs[name])
    assert cache.stats()["loads"] == 2 and cache.stats()["hits"] == 2
    cache.get(specs["c"])  # a third voice: the least recently used one goes
    assert cache.names() == ["b", "c"] and cache.stats()["evictions"] == 1
    cache.get(specs["a"])
    assert cache.stats()["loads"] == 4


# ---- routing: voice affinity weighed against load --------------------------------------

def _loads(*rows: tuple[str, int, bool], capacity: int = 16) -> list[ReplicaLoad]:
    return [ReplicaLoad(name, ongoing, capacity, holds) for name, ongoing, holds in rows]


def test_a_voice_goes_to_its_replica_unless_that_one_is_loaded_well_past_the_least() -> None:
    # The holder within the slack of the least-loaded replica keeps the voice ...
    assert rank_replicas("v", _loads(("a", 2, False), ("b", 6, True), ("c", 3, False)), 4)[0] == ["b"]
    # ... at exactly the slack too; one request more and the least-loaded replica takes it.
    assert rank_replicas("v", _loads(("a", 2, False), ("b", 7, True)), 4)[0] == ["a"]
    assert rank_replicas("v", _loads(("a", 2, False), ("b", 7, True)), 5)[0] == ["b"]
    # Slack 0 is pure least-loaded, ties still to the holder.
    assert rank_replicas("v", _loads(("a", 3, False), ("b", 3, True)), 0)[0] == ["b"]
    # Every replica is ranked, the chosen one first, full ones last.
    ranks = rank_replicas("v", _loads(("a", 16, True), ("b", 5, False), ("c", 1, False)), 4)
    assert ranks == [["c"], ["b"], ["a"]]


def test_a_popular_voice_held_twice_goes_to_the_less_loaded_holder() -> None:
    rows = _loads(("a", 9, True), ("b", 4, True), ("c", 1, False))
    assert rank_replicas("v", rows, 4)[0] == ["b"]
    assert rank_replicas("v", _loads(("a", 9, True), ("b", 8, True), ("c", 1, False)), 4)[0] == ["c"]


def test_a_voice_nobody_holds_goes_to_the_least_loaded_then_emptiest_replica() -> None:
    rows = [ReplicaLoad("a", 3, 16, False, voices=1), ReplicaLoad("b", 1, 16, False, voices=9),
            ReplicaLoad("c", 1, 16, False, voices=4)]
    assert rank_replicas("v", rows, 4)[0] == ["c"]
    # Among equals the choice depends on the voice only (rendezvous hash), not on the order given.
    equal = [ReplicaLoad(n, 0, 16, False) for n in "abcdef"]
    firsts = {rank_replicas(f"voice{i}", equal, 4)[0][0] for i in range(40)}
    assert len(firsts) > 1
    assert all(rank_replicas(f"voice{i}", equal, 4) == rank_replicas(f"voice{i}", equal[::-1], 4) for i in range(40))


def test_routing_rule_edges() -> None:
    assert rank_replicas("v", [], 4) == []
    full = _loads(("a", 16, True), ("b", 16, False))
    assert sorted(r[0] for r in rank_replicas("v", full, 4)) == ["a", "b"]  # Serve backs off and retries
    with pytest.raises(ValueError, match="affinity_slack"):
        rank_replicas("v", full, -1)
    import random

    rows = _loads(("a", 5, False), ("b", 1, False))
    assert power_of_two(rows, random.Random(0)) == [["b"], ["a"]]
    assert power_of_two(_loads(("a", 0, False)), random.Random(0)) == [["a"]]


# ---- resume through the client library -------------------------------------------------

TEXT = "The first sentence is short. The second one is a good deal longer, with a clause or two in it. A third."


async def _audio(endpoint: str, resume_samples: int = 0) -> tuple[np.ndarray, int]:
    async with AsyncClient(endpoint) as client:
        parts, result = [], None
        async for item in client.stream(TEXT, "joe", resume_samples=resume_samples, seed=3):
            if hasattr(item, "samples") and isinstance(item.samples, np.ndarray):
                parts.append(item.samples)
            else:
                result = item
        assert result is not None
        return np.concatenate(parts) if parts else np.zeros(0, np.int16), result.samples


@pytest.mark.e2e
@pytest.mark.slow
def test_resumed_request_gets_exactly_the_rest_of_the_audio(tmp_path: Path) -> None:
    with Daemon(tmp_path, workers=1, extra_args=["--engine", "null"]) as daemon:
        whole, total = asyncio.run(_audio(daemon.endpoint))
        assert total == len(whole) > 0 and np.abs(whole).max() > 0
        for cut in (1, len(whole) // 3, len(whole) - 7):
            rest, reported = asyncio.run(_audio(daemon.endpoint, resume_samples=cut))
            assert np.array_equal(rest, whole[cut:]), f"resumed at {cut}"
            assert reported == len(whole)  # the total counts what the client now holds


def test_resume_samples_must_not_be_negative() -> None:
    async def go() -> None:
        client = AsyncClient("ipc:///nonexistent")
        with pytest.raises(ValueError, match="resume_samples"):
            async for _ in client.stream("x", "joe", resume_samples=-1):
                pass
    asyncio.run(go())


# ---- the benchmark's summary -------------------------------------------------------------

def _run(routing: str, replicas: int, rps: float, p95: float, hit: float | None = 0.97) -> dict:
    return {"routing": routing, "replicas": replicas, "requests": 100, "answered_audio": 100, "lost": 0,
            "repeated_samples": 0, "missing_samples": 0, "mismatched_requests": 0, "kills": 1, "killed_at_s": 5.0,
            "resumed": 3, "fleet_cache_hit_rate": hit, "wall_s": 10.0, "requests_per_s": rps, "audio_s_per_s": 1.0,
            "p50_s": p95 / 2, "p95_s": p95, "first_byte_p50_s": 0.1, "errors": {},
            "per_replica": {"r1": {"requests": 60, "busy_s": 8.5, "loads": 2, "hits": 58, "lost": 0},
                            "r2": {"requests": 40, "busy_s": 7.0, "loads": 1, "hits": 39, "lost": 0}},
            "routing_decisions": {"affinity": 95, "spilled": 3, "new_voice": 2, "no_voice": 0}}


def test_bench_summary_compares_routings_and_scaling_and_names_each_replica() -> None:
    import argparse

    from voxpipe.bench import cluster as bench

    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    args = parser.parse_args(["--kill-replica-after", "5"])
    assert args.voice_load_ms == 2000.0
    env = bench.null_engine_env(args)
    assert env["VOXPIPE_NULL_EMULATED_LOAD_MS"] == "2000.0" and float(env["VOXPIPE_NULL_EMULATED_VOICE_MIB"]) > 0
    for bad in (["--voice-load-ms", "-1"], ["--affinity-slack", "-1"]):
        with pytest.raises(bench.BenchError):
            bench.validate(parser.parse_args(bad))
    scaling = [_run("voice", n, rps, 1.0, None) for n, rps in ((1, 2.0), (2, 3.9), (3, 5.6))]
    summary = bench.summarize(args, [_run("voice", 3, 6.0, 2.0), _run("random", 3, 5.0, 2.5)], scaling, "cmd")
    assert summary["voice_vs_random"] == {"requests_per_s": 1.2, "p95": 0.8}
    assert summary["goals"]["voice req/s >= random"] and summary["goals"]["voice p95 <= random"]
    assert summary["throughput"]["speedup"]["3"] == 2.8 and summary["goals"]["3 replicas >= 2.7x"]
    slower = bench.summarize(args, [_run("voice", 3, 4.0, 3.0), _run("random", 3, 5.0, 2.5)], scaling, "cmd")
    assert not slower["goals"]["voice req/s >= random"] and not slower["goals"]["voice p95 <= random"]
    table = bench.render_table(summary)
    assert "| voice routing | r1 | 60 | 2 | 8.5 |" in table and "requests/s 1.20x" in table
