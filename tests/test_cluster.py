"""The fleet's pieces that need no Ray cluster: its arguments, the deploy manifests
(checked against Serve's own config schema and KubeRay's RayService shape), the null
engine's audio and emulated GPU time, and the client library's resume, which the fleet
relies on (a real daemon: a resumed request gets exactly the rest of the audio)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from voxpipe.daemon.cluster.node_daemon import DaemonSettings, DaemonSettingsError
from voxpipe.ipc.client import AsyncClient
from voxpipe.stages.engines.base import EngineError
from voxpipe.stages.families.piper.engines.null_engine import EMULATED_GPU_ENV, emulated_gpu_s, null_audio

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
                         ({"daemon.workers": "two"}, "daemon.workers")):
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
