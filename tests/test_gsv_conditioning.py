"""A worker's conditioning cache with real (tiny, random-weight) voices: a request's own
clip changes what the voice says, a repeated one is computed once, auxiliary clips fuse
their timbre into v1-v2ProPlus voices, v3/v4 voices speak from a clip too, and the cache
keeps to its byte bound and forgets an unloaded voice."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
soundfile = pytest.importorskip("soundfile")

pytestmark = [pytest.mark.slow]  # GPT-SoVITS prompts and decodes

from tests.test_gsv_continuous import model_segments  # noqa: E402
from voxpipe.ipc.messages import ChunkReference  # noqa: E402
from voxpipe.stages.families.gpt_sovits.conditioning import ConditioningCache  # noqa: E402
from voxpipe.stages.families.gpt_sovits.item import GsvItem, item_chunk  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, VoiceFiles  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice_v3 import GsvModelV3  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.runner import GsvRunner  # noqa: E402

PROMPT = "今天天气很好。"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gsv-cond")
    rng = np.random.default_rng(0)
    soundfile.write(root / "clip.wav", (rng.standard_normal(32000 * 4) * 0.1).astype(np.float32), 32000)
    soundfile.write(root / "clip2.wav", (rng.standard_normal(32000 * 4) * 0.2).astype(np.float32), 32000)
    soundfile.write(root / "aux.wav", (np.sin(np.arange(16000 * 2) * 0.05) * 0.3).astype(np.float32), 16000)
    return root


def load(root: Path, version: str) -> SimpleNamespace:
    directory = write_random_gsv_voice(root, version, version, seed=1, max_sec=1.0)
    files = VoiceFiles(next(directory.glob("*.ckpt")), next(directory.glob("*.pth")), root / ".gsv-pretrained",
                       directory / "reference.wav")
    model = GsvModelV3(files, version) if version in ("v3", "v4") else GsvModel(files)
    model.build_prompt(model_segments("你好，这是一段参考音频。", "zh"))
    return SimpleNamespace(model=model, spec=SimpleNamespace(name=version, sample_rate=model.sample_rate, settings=None))


def serve(voice, cache: ConditioningCache, references: list[ChunkReference | None]) -> list[np.ndarray]:
    segs = model_segments("你好，世界。", "zh")
    runs = tuple((s.lang, s.norm_text, len(s.phone_ids), tuple(s.word2ph)) for s in segs)
    ids = np.asarray([i for s in segs for i in s.phone_ids], dtype=np.int64)
    item = GsvItem(ids, 0.0, 1.0, 3, runs, top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0,
                   sample_steps=2 if voice.spec.name in ("v3", "v4") else None)
    runner = GsvRunner(len(references), conditioning=cache)
    for i, reference in enumerate(references):
        runner.admit(voice, dataclasses.replace(item_chunk(item, f"r{i}", text="x"), reference=reference), max_tokens=20)
    out: dict[str, list[np.ndarray]] = {}
    while len(runner):
        result = runner.step()
        assert not result.failed, result.failed
        for piece in result.pieces:
            out.setdefault(piece.chunk.request_id, []).append(piece.audio)
    return [np.concatenate(out[f"r{i}"]) for i in range(len(references))]


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    n = min(len(a), len(b))
    return len(a) != len(b) or float(np.abs(a[:n] - b[:n]).max()) > 1e-3


@pytest.mark.parametrize("version", ["v2Pro", "v4"])
def test_a_clip_changes_the_audio_is_computed_once_and_aux_clips_fuse_in_v2(root, version):
    voice, cache = load(root, version), ConditioningCache(1 << 30)
    clip = ChunkReference(str(root / "clip.wav"), PROMPT, "zh")
    fused = ChunkReference(str(root / "clip.wav"), PROMPT, "zh", [str(root / "aux.wav")])
    own, first, again, with_aux = serve(voice, cache, [None, clip, clip, fused])
    assert differ(own, first)
    assert np.array_equal(first, again)
    assert cache.stats()["misses"] == 2 and cache.stats()["hits"] == 1  # clip, fused; clip again
    assert differ(first, with_aux) == (version == "v2Pro")  # v3/v4 take their timbre from the main clip only


def test_the_cache_keeps_to_its_bound_and_forgets_an_unloaded_voice(root):
    voice = load(root, "v2")
    cache = ConditioningCache(1 << 30)
    serve(voice, cache, [ChunkReference(str(root / "clip.wav"), PROMPT, "zh")])
    one = cache.stats()["bytes"]
    assert one > 0
    cache.max_bytes = one + one // 2  # room for one entry
    serve(voice, cache, [ChunkReference(str(root / "clip2.wav"), PROMPT, "zh")])  # as long: as large
    assert cache.stats()["entries"] == 1 and cache.stats()["evictions"] == 1
    cache.forget(voice.spec.name)
    assert cache.stats()["entries"] == 0 and cache.stats()["bytes"] == 0


def test_a_clip_no_longer_stored_fails_its_chunk_clearly(root):
    from voxpipe.stages.engines.base import EngineError

    voice = load(root, "v2")
    runner = GsvRunner(1, conditioning=ConditioningCache(1 << 20))
    item = GsvItem(np.asarray([1, 2, 3]), 0.0, 1.0, 3)
    chunk = dataclasses.replace(item_chunk(item, "r"), reference=ChunkReference(str(root / "gone.wav"), PROMPT, "zh"))
    with pytest.raises(EngineError, match="no longer stored"):
        runner.admit(voice, chunk)
