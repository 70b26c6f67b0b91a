"""The benchmarks as users get them: from a built wheel, installed apart (pip install
--target), run through the installed `voxpipe` command in a directory that is not the
checkout. Each run checks first that the voxpipe it imported is the installed one, not
the editable checkout. One tiny `voxpipe bench` end to end on the shipped texts; a short
`voxpipe bench soak` and `voxpipe bench firstbyte` against an installed daemon; `bench
gsv` and `cluster bench` (minutes, and a reference package or Ray) as far as they go
without those: their options, their package code and data, their first checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.daemon_proc import free_port
from tests.test_packaging import build_wheel
from voxpipe.ipc.client import Client
from voxpipe.ipc.errors import VoxpipeError

pytestmark = pytest.mark.slow

# Runs the installed console script after checking where voxpipe comes from: what the
# script does (`from voxpipe.daemon.cli import main`) then finds the modules checked here.
RUN_INSTALLED = """\
import runpy, sys
import voxpipe, voxpipe.bench
target = sys.argv.pop(1)
for module in (voxpipe, voxpipe.bench):
    if not module.__file__.startswith(target + "/"):
        sys.exit(f"{module.__name__} was imported from {module.__file__}, not from {target}")
script = sys.argv.pop(1)
sys.argv[0] = script
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel installed into a folder of its own. -> that folder."""
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    target = tmp_path_factory.mktemp("site").resolve()
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert (target / "bin" / "voxpipe").is_file() and (target / "voxpipe" / "bench" / "data").is_dir()
    return target


@pytest.fixture
def cwd() -> Iterator[Path]:
    """Somewhere that is not the checkout (nor under it), with a short path: the daemon's
    ipc sockets go in it, and a socket's path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="vp-bench-") as tmp:
        here = Path(tmp).resolve()
        assert not here.is_relative_to(Path(__file__).resolve().parents[1])
        yield here


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VOXPIPE_ENDPOINT")}
    return dict(env, PYTHONPATH=str(target), PYTHONUNBUFFERED="1")


def voxpipe(target: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`voxpipe ARGS` through the installed script, with the installed package first."""
    return subprocess.run([sys.executable, "-c", RUN_INSTALLED, str(target), str(target / "bin" / "voxpipe"), *args],
                          cwd=cwd, env=_env(target), capture_output=True, text=True, timeout=timeout)


def test_the_check_notices_the_editable_checkout(installed, cwd):
    """Without the installed folder first on the path, the run refuses to go on."""
    env = dict(_env(installed), PYTHONPATH="")
    run = subprocess.run([sys.executable, "-c", RUN_INSTALLED, str(installed), str(installed / "bin" / "voxpipe"),
                          "--version"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "not from" in run.stderr


@pytest.mark.e2e
def test_voxpipe_bench_runs_end_to_end_from_the_wheel(installed, cwd):
    """The daemon against piper, tiny: the null engine, the texts shipped in the package
    (no --texts-dir), no baseline (piper's real speech takes the time), plots included."""
    out = cwd / "out"
    run = voxpipe(installed, cwd, "bench", "--engine", "null", "--quick", "--workers", "1", "--clients", "1",
                  "--micro-n", "20", "--no-baseline", "--out", str(out), timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "latency_vs_length.png",
                                               "first_audio_vs_length.png", "throughput_vs_concurrency.png"}
    saved = json.loads((out / "results.json").read_text())
    shipped = (installed / "voxpipe" / "bench" / "data" / "texts_en.tsv").read_text(encoding="utf-8")
    classes = {line.split("\t")[0] for line in shipped.splitlines() if line.strip() and not line.startswith("#")}
    scaled = {f"longformx{times}" for times in (1, 10, 50)}  # the long form repeated: first audio only
    assert {s["cls"] for s in saved["samples"]} == classes | {"longform"} | scaled
    assert saved["micro"] and len(saved["micro"]["ping_s"]) == 20


def test_bench_gsv_from_the_wheel(installed, cwd):
    """Its options, its reference runner as package code, and its first check: where the
    reference package is (a real run takes minutes: tests/test_gsv_serve_bench.py)."""
    run = voxpipe(installed, cwd, "bench", "gsv", "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--reference" in run.stdout and "--concurrency" in run.stdout
    find = subprocess.run([sys.executable, "-c", "import importlib.util; "
                           "print(importlib.util.find_spec('voxpipe.bench.gsv_reference_runner').origin)"],
                          cwd=cwd, env=_env(installed), capture_output=True, text=True, timeout=60)
    assert Path(find.stdout.strip()) == installed / "voxpipe" / "bench" / "gsv_reference_runner.py", find.stderr
    run = voxpipe(installed, cwd, "bench", "gsv", "--reference", str(cwd / "no-reference"))
    assert run.returncode == 2 and "pip install --no-deps --target" in run.stderr, run.stderr[-2000:]


def test_cluster_bench_from_the_wheel(installed, cwd):
    """Its options and its own checks of them (a real run starts a Ray cluster: minutes)."""
    run = voxpipe(installed, cwd, "cluster", "bench", "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--replicas" in run.stdout and "--kill-replica-after" in run.stdout
    run = voxpipe(installed, cwd, "cluster", "bench", "--replicas", "0")
    assert run.returncode == 2 and "--replicas must be at least 1" in run.stderr, run.stderr[-2000:]


@pytest.mark.e2e
def test_soak_and_firstbyte_against_an_installed_daemon(installed, cwd):
    """A short soak (no kills: tests/test_hardening.py has those) and the first-byte
    comparison on the shipped long form, against a null-engine daemon from the wheel."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    endpoint, port = f"ipc://{cwd / 'vp.sock'}", free_port()
    config = cwd / "voxpipe.toml"
    config.write_text(f'endpoint = "{endpoint}"\nstate_dir = "{cwd / "state"}"\n'
                      f'worker.engine = "null"\nworker.count = 1\n')
    log = (cwd / "daemon.log").open("wb")
    daemon = subprocess.Popen([sys.executable, "-c", RUN_INSTALLED, str(installed), str(installed / "bin" / "voxpipe"),
                               "serve", "--config", str(config), "--http", f"127.0.0.1:{port}"],
                              cwd=cwd, env=_env(installed), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert daemon.poll() is None, (cwd / "daemon.log").read_text(errors="replace")[-3000:]
            try:
                with Client(endpoint, connect_timeout=1.0) as client:
                    client.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                break
            except VoxpipeError:
                assert time.monotonic() < deadline, (cwd / "daemon.log").read_text(errors="replace")[-3000:]
                time.sleep(0.2)
        run = voxpipe(installed, cwd, "bench", "soak", "--endpoint", endpoint, "--duration", "2",
                      "--concurrency", "2", "--kill-every", "0")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        report = json.loads(run.stdout)
        assert report["requests"] > 0 and report["lost"] == 0 and report["answered_audio"] > 0
        run = voxpipe(installed, cwd, "bench", "firstbyte", "--http", f"127.0.0.1:{port}", "--endpoint", endpoint)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        lines = run.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["zeromq", "http"] and all("first audio" in x for x in lines)
    finally:
        daemon.terminate()
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, 9)
            daemon.wait(10)
        log.close()
