"""A GPT-SoVITS worker's torch threads follow how many engine processes are busy: a lone
request runs on every core, and under load each worker keeps to its configured share."""
from __future__ import annotations

import fcntl
import os

import pytest

torch = pytest.importorskip("torch")

from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.engines.busy_board import usable_cores  # noqa: E402
from voxpipe.stages.families.base import RunnerSettings  # noqa: E402
from voxpipe.stages.families.gpt_sovits import GptSovitsFamily  # noqa: E402
from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine  # noqa: E402


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(usable_cores() < 2, reason="needs two usable cores")
def test_threads_follow_the_busy_workers(tmp_path, restore_threads):
    engine = GptSovitsEngine(EngineSettings(threads=1, options={"busy_dir": str(tmp_path), "max_threads": 2}))
    with engine.compute():
        assert torch.get_num_threads() == 2  # alone: every core it may use
    peer = os.open(tmp_path / "1.busy", os.O_RDWR | os.O_CREAT)  # another worker (pid 1 lives) ...
    try:
        fcntl.flock(peer, fcntl.LOCK_EX)  # ... inside a model call
        with engine.compute():
            assert torch.get_num_threads() == 1
        fcntl.flock(peer, fcntl.LOCK_UN)
        with engine.compute():
            assert torch.get_num_threads() == 2
    finally:
        os.close(peer)


def test_one_thread_configured_as_the_most_stays_one(tmp_path, restore_threads):
    engine = GptSovitsEngine(EngineSettings(threads=1, options={"busy_dir": str(tmp_path), "max_threads": 1}))
    with engine.compute():
        assert torch.get_num_threads() == 1


def test_the_serving_runner_steps_inside_the_engines_compute(tmp_path, restore_threads):
    engine = GptSovitsEngine(EngineSettings(threads=1, options={"busy_dir": str(tmp_path)}))
    runner = GptSovitsFamily().runner(engine, RunnerSettings())
    entered = []
    real = engine.compute
    runner.compute = lambda: (entered.append(1), real())[1]
    runner.step(0.0)
    assert entered == [1]
    assert GptSovitsFamily().runner(engine, RunnerSettings()).compute == engine.compute
