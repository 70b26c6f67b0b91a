"""A random-weight GPT-SoVITS voice served end to end: `voxpipe voice random` writes it,
a real daemon serves it from its voices_dir (preloaded, so its prompt is computed at
start), and `voxpipe say` / the client library get 32 kHz audio, streamed by chunk."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("torch")
pytest.importorskip("transformers")

from voxpipe.ipc.client import AsyncClient, run_async  # noqa: E402
from voxpipe.ipc.errors import VoxpipeError  # noqa: E402
from tests.daemon_proc import Daemon  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a random GPT-SoVITS voice and daemons of its own

ROOT = Path(__file__).resolve().parent.parent
VOICE = "gsvtest"
TEXT = "你好，这是一个测试。Hello there, voxpipe speaks now. 我们一起说话吧！"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    voices = tmp_path_factory.mktemp("gsv-voices")
    made = _cli("voice", "random", VOICE, "--family", "gpt-sovits", "--version", "v2", "-d", str(voices))
    assert made.returncode == 0, made.stderr
    assert (voices / VOICE / "voice.toml").is_file()
    return voices


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, voices):
    # A call's threads follow how busy the machine is (other tests' daemons too); the
    # engine decides tokens at a fixed count, so seeded renders still repeat exactly.
    with Daemon(tmp_path_factory.mktemp("gsv-daemon"), workers=1, voices_dir=str(voices),
                preload=[VOICE]) as d:
        yield d


def test_status_lists_the_voice(daemon):
    with daemon.client() as client:
        status = client.status()
    assert VOICE in str(status)


def test_say_writes_32khz_audio(daemon, tmp_path):
    out = tmp_path / "gsv.wav"
    said = _cli("say", "--endpoint", daemon.endpoint, "--voice", VOICE, "--top-k", "5", "--seed", "3",
                "-o", str(out), TEXT)
    assert said.returncode == 0, said.stderr
    assert said.stderr.rstrip().endswith("seed 3"), said.stderr  # the summary names the seed
    audio, rate = soundfile.read(str(out), dtype="int16")
    assert rate == 32000
    assert len(audio) > 32000 // 2 and np.abs(audio).max() > 100


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 4


def test_streamed_by_chunk_and_seeded(daemon):
    with daemon.client() as client:
        fragments = list(client.stream(TEXT, VOICE, top_k=1, repetition_penalty=1.0, noise_scale=0.0))
        again = client.synthesize(TEXT, VOICE, top_k=1, repetition_penalty=1.0, noise_scale=0.0)
        sampled = [client.synthesize(TEXT, VOICE, top_k=20, temperature=1.0, seed=s) for s in (7, 7, 8)]
    assert len(fragments) >= 2  # more than one chunk, each sent when ready
    assert all(f.sample_rate == 32000 for f in fragments)
    streamed = np.concatenate([f.samples for f in fragments])
    # Calls may get other thread counts (the machine's load): the same tokens, and audio
    # within the seamless replay's 4 int16 steps.
    assert_close(streamed, again.samples)  # greedy decoding, no noise: deterministic
    assert_close(sampled[0].samples, sampled[1].samples)  # same seed, same audio
    assert not np.array_equal(sampled[0].samples, sampled[2].samples)


def test_word_timings_per_chunk(daemon):
    """GPT-SoVITS has no durations: each chunk's words share its audio, in order, inside it."""
    from voxpipe.stages.families.gpt_sovits.words import gsv_words

    with daemon.client() as client:
        audio = client.synthesize(TEXT, VOICE, top_k=1, repetition_penalty=1.0, noise_scale=0.0)
        stream = client.stream(TEXT, VOICE, top_k=1, repetition_penalty=1.0, noise_scale=0.0)
        fragments = list(stream)
    assert [w.text for w in audio.words] == gsv_words(TEXT)
    last = 0.0
    for word in audio.words:
        assert last <= word.start <= word.end <= audio.duration + 1e-9
        last = word.end
    assert audio.words[-1].end == pytest.approx(audio.duration, abs=1e-3)  # the last chunk's end is measured
    assert [w for f in fragments for w in f.words] == stream.words == audio.words


def test_sampling_options_are_checked(daemon):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("你好。", VOICE, top_p=0.0)
    assert err.value.code == "bad_option"


LANGUAGE_TEXTS = {"ja": "こんにちは、今日はいい天気ですね。", "ko": "안녕하세요, 반갑습니다.", "yue": "你食咗飯未呀？"}


@pytest.mark.parametrize("lang", sorted(LANGUAGE_TEXTS))
def test_text_lang_speaks_the_language(daemon, lang):
    """A request's text_lang decides how its text is read (the voice's language is zh/auto):
    Japanese, Korean and Cantonese speak through the real daemon."""
    import importlib.util

    needs = {"ja": "pyopenjtalk", "ko": "mecab", "yue": "ToJyutping"}[lang]
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed (the gsv-languages extra)")
    with daemon.client() as client:
        audio = client.synthesize(LANGUAGE_TEXTS[lang], VOICE, text_lang=lang, top_k=1, seed=1)
    assert audio.sample_rate == 32000 and len(audio.samples) > 3200
    assert np.abs(audio.samples).max() > 0


def test_unknown_text_lang_is_a_bad_option_and_the_daemon_serves_on(daemon):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("こんにちは。", VOICE, text_lang="klingon")
        assert err.value.code == "bad_option" and "text_lang" in str(err.value)
        assert len(client.synthesize("你好。", VOICE, top_k=1, seed=1).samples) > 0


def test_a_full_gpt_sovits_batch_does_not_hold_up_other_voices(tmp_path, voices):
    """One worker whose GPT-SoVITS batch holds one sequence, four GPT-SoVITS requests, then
    one for a Piper voice while three of them wait in the worker's queue: the Piper chunk
    runs between decoding steps instead of waiting behind them for the batch to empty."""
    with Daemon(tmp_path, workers=1, voices_dir=str(voices), preload=[VOICE, "joe"],
                worker={"max_batch": 1, "credits": 6}) as daemon:
        def worker_queue() -> int:
            with daemon.client() as client:
                return next(p["stats"].get("queue", 0) for p in client.status()["processes"] if p["role"] == "worker")

        async def scenario() -> dict[str, float]:
            done: dict[str, float] = {}
            async with AsyncClient(daemon.endpoint) as client:
                async def one(name: str, text: str, voice: str, **options) -> None:
                    await client.synthesize(text, voice, **options)
                    done[name] = time.monotonic()

                # One chunk each (no short first chunk), so a request ends when its chunk does.
                tasks = [asyncio.create_task(one(f"g{i}", "你好，这是一个测试。", VOICE, seed=i, first_chunk=False))
                         for i in range(4)]
                deadline = time.monotonic() + 30
                while await asyncio.to_thread(worker_queue) < 2:  # one decoding, the others waiting
                    assert time.monotonic() < deadline, "the GPT-SoVITS chunks never queued up"
                    await asyncio.sleep(0.05)
                tasks.append(asyncio.create_task(one("piper", "Hello.", "joe")))
                await asyncio.gather(*tasks)
            return done

        done = run_async(scenario())
    # Blocked, it would start only once the last GPT-SoVITS chunk joined the batch.
    assert done["piper"] < sorted(done[f"g{i}"] for i in range(4))[2], done
