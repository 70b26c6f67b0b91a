"""A GPT-SoVITS worker's torch threads follow how many engine processes are busy: a lone
request runs on every core, and under load each worker keeps to its configured share."""
from __future__ import annotations

import fcntl
import os

import numpy as np
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


def _render(runner, voice, chunk, peer: int | None) -> tuple[list, list[int], np.ndarray, set[int], set[int]]:
    """One chunk through the runner, with another worker busy (`peer` holds its lock) or
    not -> its logits and tokens, its audio, and the thread counts the decoder's and the
    renderer's calls ran at."""
    from voxpipe.stages.families.gpt_sovits import runner as runner_module

    decoding, rendering, tokens, logits = set(), set(), [], []
    step, render, step_logits = runner.decoder.step, runner_module.render_windows, runner.decoder._logits

    def kept_logits(seqs):
        out = step_logits(seqs)
        logits.extend(t.clone() for t in out.values())
        return out

    def counted_step(*args):
        decoding.add(torch.get_num_threads())
        events = step(*args)
        tokens.extend(e.token for e in events if e.token is not None)
        return events

    def counted_render(*args):
        rendering.add(torch.get_num_threads())
        return render(*args)

    runner.decoder.step, runner.decoder._logits = counted_step, kept_logits
    runner_module.render_windows = counted_render
    try:
        if peer is not None:
            fcntl.flock(peer, fcntl.LOCK_EX)
        runner.admit(voice, chunk, max_tokens=60)
        pieces = []
        while len(runner):
            result = runner.step()
            assert not result.failed
            pieces += [p.audio for p in result.pieces]
    finally:
        runner.decoder.step, runner.decoder._logits = step, step_logits
        runner_module.render_windows = render
        if peer is not None:
            fcntl.flock(peer, fcntl.LOCK_UN)
    return logits, tokens, np.concatenate(pieces), decoding, rendering


@pytest.mark.slow  # a random voice's decode and render, twice
@pytest.mark.skipif(usable_cores() < 2, reason="needs two usable cores")
def test_a_seeded_chunk_renders_alike_whatever_threads_its_calls_get(tmp_path, restore_threads):
    """A call gets 2 threads while the machine is idle and 1 while another worker is busy;
    the tokens are decided at the fixed count either way, so the chunk replays exactly
    (audio within 4 int16 steps, the seamless replay's bound) under any load."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from tests.test_gsv_continuous import load_random_voice
    from voxpipe.bench.gsv_serve import _item, make_requests
    from voxpipe.stages.families.gpt_sovits.item import item_chunk
    from voxpipe.stages.families.gpt_sovits.runner import GsvRunner

    model = load_random_voice(tmp_path / "voices", "threads", 3, max_sec=30.0)
    voice = SimpleNamespace(model=model, spec=SimpleNamespace(name="threads", sample_rate=model.sample_rate))
    engine = GptSovitsEngine(EngineSettings(threads=1, options={"busy_dir": str(tmp_path / "busy"), "max_threads": 2}))
    item = _item(make_requests(2)[1])  # sampling on (top_k 15, temperature, penalty), seeded
    peer = os.open(tmp_path / "busy" / "1.busy", os.O_RDWR | os.O_CREAT)  # another worker (pid 1 lives)
    try:
        runs = [_render(GsvRunner(1, compute=engine.compute, deciding=engine.deciding), voice,
                        item_chunk(item, f"r{i}"), peer if busy else None) for i, busy in enumerate((False, True))]
    finally:
        os.close(peer)
    (idle_logits, idle_tokens, idle_audio, idle_decoding, idle_rendering) = runs[0]
    (busy_logits, busy_tokens, busy_audio, busy_decoding, busy_rendering) = runs[1]
    assert idle_rendering == {2} and busy_rendering == {1}  # the calls did get 2 and 1 threads
    assert idle_decoding == busy_decoding == {1}  # the tokens were decided at worker.threads
    # Bitwise: at 1 and 2 threads the decode steps' logits differ in their last bits.
    assert len(idle_logits) == len(busy_logits) and all(torch.equal(a, b) for a, b in zip(idle_logits, busy_logits))
    assert len(idle_tokens) == 60 and idle_tokens == busy_tokens
    assert idle_audio.shape == busy_audio.shape
    steps = np.abs(np.round(idle_audio * 32767).astype(np.int32) - np.round(busy_audio * 32767).astype(np.int32))
    assert steps.max() <= 4
