"""v3/v4 texts in the serving runner: their mel is decoded one CFM chunk per step once
their tokens are complete, the chunks of several texts in one call (`mel_batch`), and
every text gets the audio it gets alone, piece for piece, whatever the batching."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # v3/v4 CFM renders

from tests.test_gsv_continuous import GREEDY, model_segments  # noqa: E402
from voxpipe.stages.families.gpt_sovits.item import GsvItem  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.item import item_chunk  # noqa: E402
from voxpipe.stages.families.gpt_sovits.runner import GsvRunner  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice import VoiceFiles  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice_v3 import GsvModelV3  # noqa: E402

TEXTS = ("你好，世界。", "今天天气很好，我们去公园散步吧。", "好。")
MAX_TOKENS = (60, 200, 30)  # 200 tokens (800 mel frames) span two of v4's CFM chunks (680 new frames each)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("gsv-v4-runner")
    directory = write_random_gsv_voice(root, "v4", "v4", seed=4, max_sec=10.0)
    files = VoiceFiles(next(directory.glob("*.ckpt")), next(directory.glob("*.pth")), root / ".gsv-pretrained",
                       directory / "reference.wav")
    model = GsvModelV3(files, "v4")
    model.build_prompt(model_segments("你好，这是一段参考音频。", "zh"))
    return SimpleNamespace(model=model, spec=SimpleNamespace(name="v4", sample_rate=model.sample_rate))


def _item(text: str, seed: int) -> GsvItem:
    segments = model_segments(text, "zh")
    runs = tuple((s.lang, s.norm_text, len(s.phone_ids), tuple(s.word2ph)) for s in segments)
    ids = np.asarray([i for s in segments for i in s.phone_ids], dtype=np.int64)
    return GsvItem(ids, 0.0, 1.0, seed, runs, top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0,
                   sample_steps=2)  # greedy, 2 CFM steps


def _serve(voice, mel_batch: int, texts=TEXTS, max_tokens=MAX_TOKENS
           ) -> tuple[dict[str, list[np.ndarray]], list[tuple[str, int]], int]:
    """-> pieces per request, the order pieces came in ((request, part)), steps taken."""
    runner = GsvRunner(max_sequences=len(texts), mel_batch=mel_batch)
    for i, text in enumerate(texts):
        runner.admit(voice, item_chunk(_item(text, 10 + i), f"r{i}", text=text), max_tokens=max_tokens[i])
    pieces: dict[str, list[np.ndarray]] = {}
    order, steps, calls = [], 0, []
    decoder = voice.model.decoder
    original = decoder.next_mels
    decoder.next_mels = lambda jobs: calls.append(len(jobs)) or original(jobs)
    try:
        while len(runner):
            result = runner.step()
            steps += 1
            assert not result.failed and not result.requeue
            for p in result.pieces:
                pieces.setdefault(p.chunk.request_id, []).append(p.audio)
                order.append((p.chunk.request_id, p.part))
                assert p.last == (p.chunk.request_id not in {k for k, _ in runner.streams})
    finally:
        del decoder.next_mels
    return pieces, order, max(calls)


def test_each_text_gets_its_lone_audio_in_pieces_per_cfm_chunk(voice):
    model = voice.model
    pieces, _, widest = _serve(voice, mel_batch=1)
    assert widest == 1
    for i, text in enumerate(TEXTS):
        segments = model_segments(text, "zh")
        tokens = model.semantic_tokens(segments, GREEDY, 10 + i, MAX_TOKENS[i]).tokens
        lone = model.render(tokens, [p for s in segments for p in s.phone_ids], 0.0, 1.0, 10 + i, 2)
        got = np.concatenate(pieces[f"r{i}"])
        assert got.shape == lone.shape
        assert np.abs(got - lone).max() < 1e-3
    assert len(pieces["r1"]) == 2  # two CFM chunks, one piece each


def test_batched_cfm_calls_give_the_same_pieces(voice):
    lengths = (200, 200, 60)  # the first two end together: their chunks can share calls
    alone, _, _ = _serve(voice, mel_batch=1, max_tokens=lengths)
    together, _, widest = _serve(voice, mel_batch=3, max_tokens=lengths)
    assert widest == 2  # chunks of two texts went in one call
    for request, expected in alone.items():
        assert len(together[request]) == len(expected)
        for a, b in zip(together[request], expected):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-3


def test_first_pieces_come_before_anyone_s_second(voice):
    """Texts whose tokens end together: each one's first chunk is rendered before the long
    text's second, so one long text does not hold the others' first audio."""
    _, order, _ = _serve(voice, mel_batch=1, texts=("今天天气很好，我们去公园散步吧。", "你好，世界。"), max_tokens=(200, 200))
    assert order.index(("r1", 0)) < order.index(("r0", 1))
