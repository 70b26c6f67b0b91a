"""A request's own GPT-SoVITS reference clip, end to end: over the client library,
`voxpipe say`, api_v2's /tts (by path and uploaded as base64) and the OpenAI route; the
path rules; the conditioning cache counted in status; bad clips answered clearly while
the daemon keeps serving."""
from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")
soundfile = pytest.importorskip("soundfile")

from tests.daemon_proc import http_daemon, settled_status, wait_idle  # noqa: E402
from voxpipe.ipc.client import Reference  # noqa: E402
from voxpipe.ipc.errors import VoxpipeError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
VOICE = "gsvref"
MOODY = "moody"  # a voice of tests/family_with_new_option.py's family
TEXT = "Hello there."
GREEDY = {"top_k": 1, "repetition_penalty": 1.0, "noise_scale": 0.0, "seed": 5}
MAX_REFERENCE_KIB = 512


def clip_bytes(seconds: float, seed: int, rate: int = 16000, channels: int = 1, fmt: str = "WAV") -> bytes:
    """Speech-like noise: a few harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + 60 * seed % 90
    voiced = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
    audio = 0.2 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.02 * rng.standard_normal(len(t))
    audio = np.repeat(audio[:, None], channels, axis=1).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, audio, rate, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return out.getvalue()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    from voxpipe.stages import families

    voices = tmp_path_factory.mktemp("ref-voices")
    families.get("gpt-sovits").write_random_voice(voices, VOICE, seed=0, version="v2")
    families.get("gpt-sovits").write_random_voice(voices, MOODY, seed=1, version="v2")
    (voices / MOODY / "moods").write_text("")
    clips = tmp_path_factory.mktemp("ref-clips")
    (clips / "a.wav").write_bytes(clip_bytes(4.0, 1))
    (clips / "b.wav").write_bytes(clip_bytes(5.0, 2))
    (clips / "long.wav").write_bytes(clip_bytes(12.0, 3))
    (clips / "short.wav").write_bytes(clip_bytes(1.0, 4))
    (clips / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all" * 10)
    (clips / "large.wav").write_bytes(clip_bytes(4.0, 5, rate=48000, channels=2))  # > MAX_REFERENCE_KIB
    (clips / "escape.wav").symlink_to("/etc/hostname")
    (voices / VOICE / "mood.wav").write_bytes(clip_bytes(4.0, 6))  # a clip in the voice's folder
    return {"voices": voices, "clips": clips, "outside": tmp_path_factory.mktemp("elsewhere")}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, dirs):
    (dirs["outside"] / "c.wav").write_bytes(clip_bytes(4.0, 7))
    http = {"reference_dirs": [str(dirs["clips"])], "max_reference_kib": MAX_REFERENCE_KIB,
            "gsv_default_voice": VOICE}
    with http_daemon(tmp_path_factory.mktemp("ref-daemon"), workers=1, voices_dir=str(dirs["voices"]),
                     preload=[VOICE], http=http,
                     families={"gsv-moods": "tests.family_with_new_option:MoodFamily"}) as d:
        yield d


def near(a: np.ndarray, b: np.ndarray) -> bool:
    """The same audio up to rounding: a CPU worker's torch thread count follows how busy
    the machine is, and sums in another order move samples by a few steps (a random-weight
    vocoder amplifies them). Another clip moves them by thousands."""
    return len(a) == len(b) and int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) <= 64


def streamed(daemon, clip: Path) -> np.ndarray:
    """The audio a clip gives streamed, as the HTTP routes ask for it (windows joined can
    differ from a whole rendering by rounding)."""
    with daemon.client() as client:
        return np.concatenate([f.samples for f in client.stream(TEXT, VOICE, reference=Reference(
            str(clip), "你好，这是参考。", "zh"), **GREEDY)])


def conditioning(daemon) -> dict:
    return settled_status(daemon)["conditioning_cache"]


def test_a_clip_changes_the_audio_and_a_repeated_one_is_cached(daemon, dirs):
    clip = dirs["clips"] / "a.wav"
    with daemon.client() as client:
        own = client.synthesize(TEXT, VOICE, **GREEDY).samples
        before = conditioning(daemon)
        first = client.synthesize(TEXT, VOICE, reference=Reference(str(clip), "你好，这是参考。", "zh"), **GREEDY)
        after_first = conditioning(daemon)
        again = client.synthesize(TEXT, VOICE, reference=Reference(clip.read_bytes(), "你好，这是参考。", "zh"),
                                  **GREEDY)
        after_again = conditioning(daemon)
        other = client.synthesize(TEXT, VOICE, reference=Reference(str(dirs["clips"] / "b.wav"), "你好，这是参考。",
                                                                    "zh"), **GREEDY)
    assert not near(own, first.samples) and not near(first.samples, other.samples)
    assert near(first.samples, again.samples)  # a path or its bytes: the same clip
    assert after_first["misses"] == before["misses"] + 1 and after_first["hits"] == before["hits"]
    assert after_again["hits"] == after_first["hits"] + 1 and after_again["misses"] == after_first["misses"]


@pytest.mark.parametrize("name, fragment", [("long.wav", "12.0 s"), ("short.wav", "1.0 s"),
                                            ("broken.wav", "cannot be decoded"), ("large.wav", "KiB")])
def test_bad_clips_are_refused_clearly_and_the_daemon_keeps_serving(daemon, dirs, name, fragment):
    with daemon.client() as client:
        with pytest.raises(VoxpipeError) as caught:
            client.synthesize(TEXT, VOICE, reference=Reference(str(dirs["clips"] / name), "你好。", "zh"))
        assert caught.value.code == "bad_reference" and fragment in caught.value.message
        assert len(client.synthesize(TEXT, VOICE, **GREEDY).samples) > 0
    reply = httpx.get(daemon.url + "/tts", timeout=60, params={
        "text": TEXT, "text_lang": "en", "ref_audio_path": str(dirs["clips"] / name), "prompt_text": "你好。",
        "prompt_lang": "zh"})
    assert reply.status_code == 400 and fragment in reply.json()["message"], reply.text


def test_a_clip_needs_its_transcript_and_a_known_language(daemon, dirs):
    with daemon.client() as client:
        for ref, fragment in ((Reference(str(dirs["clips"] / "a.wav"), ""), "prompt_text"),
                              (Reference(str(dirs["clips"] / "a.wav"), "hi", "xx"), "prompt_lang")):
            with pytest.raises(VoxpipeError) as caught:
                client.synthesize(TEXT, VOICE, reference=ref)
            assert caught.value.code == "bad_option" and fragment in caught.value.message
        with pytest.raises(VoxpipeError) as caught:
            client.synthesize(TEXT, "joe", reference=Reference(str(dirs["clips"] / "a.wav"), "hi", "en"))
        assert caught.value.code == "bad_option" and "no reference clip" in caught.value.message


def test_say_uploads_a_clip(daemon, dirs, tmp_path):
    out = tmp_path / "said.wav"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    said = subprocess.run([sys.executable, "-m", "voxpipe.daemon.cli", "say", "--endpoint", daemon.endpoint,
                           "--voice", VOICE, "--ref-audio", str(dirs["clips"] / "a.wav"), "--prompt-text",
                           "你好，这是参考。", "--prompt-lang", "zh", "--top-k", "1", "--repetition-penalty", "1.0",
                           "--noise-scale", "0", "--seed", "5", "-o", str(out), TEXT],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert said.returncode == 0, said.stderr
    audio, rate = soundfile.read(str(out), dtype="int16")
    assert rate == 32000 and near(audio, streamed(daemon, dirs["clips"] / "a.wav"))


def _tts(daemon, **params) -> httpx.Response:
    body = {"text": TEXT, "text_lang": "en", "media_type": "raw", **GREEDY, **params}
    return httpx.post(daemon.url + "/tts", json=body, timeout=120)


def test_tts_by_path_and_by_upload_speak_the_same(daemon, dirs):
    clip = dirs["clips"] / "a.wav"
    expected = streamed(daemon, clip)
    assert httpx.get(daemon.url + "/set_gpt_weights", timeout=30, params={
        "weights_path": str(next((dirs["voices"] / VOICE).glob("*.ckpt")))}).json()["voice"] == VOICE
    by_path = _tts(daemon, ref_audio_path=str(clip), prompt_text="你好，这是参考。", prompt_lang="zh")
    uploaded = _tts(daemon, ref_audio_base64=base64.b64encode(clip.read_bytes()).decode(),
                    prompt_text="你好，这是参考。", prompt_lang="zh")
    for reply in (by_path, uploaded):
        assert reply.status_code == 200, reply.text
        assert near(np.frombuffer(reply.content, np.int16), expected)
        assert "prompt_text" not in reply.headers.get("x-voxpipe-ignored", "")


def test_openai_route_takes_an_uploaded_clip(daemon, dirs):
    clip = dirs["clips"] / "a.wav"
    expected = streamed(daemon, clip)
    reply = httpx.post(daemon.url + "/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "input": TEXT, "voice": VOICE, "response_format": "pcm", **GREEDY,
        "ref_audio_base64": base64.b64encode(clip.read_bytes()).decode(), "prompt_text": "你好，这是参考。",
        "prompt_lang": "zh"})
    assert reply.status_code == 200, reply.text
    samples = np.frombuffer(reply.content, np.int16)
    if reply.headers.get("x-voxpipe-sample-rate", "32000") == "32000":  # pcm is resampled to 24 kHz where it can be
        assert near(samples, expected)
    assert len(samples) > 0 and not reply.headers.get("x-voxpipe-ignored")


def test_a_clip_in_a_voices_folder_speaks_with_that_voice(daemon, dirs):
    mood = dirs["voices"] / VOICE / "mood.wav"
    expected = streamed(daemon, mood)
    for spelling in (str(mood), f"{VOICE}/mood.wav"):
        reply = _tts(daemon, ref_audio_path=spelling, prompt_text="你好，这是参考。", prompt_lang="zh")
        assert reply.status_code == 200, reply.text
        assert near(np.frombuffer(reply.content, np.int16), expected)


@pytest.mark.parametrize("ref", ["/etc/passwd", "../../../etc/passwd", "{clips}/../../etc/passwd", "{clips}/escape.wav",
                                 "{clips}/missing.wav", "{outside}/c.wav", "{clips}", ""])
def test_paths_outside_the_allowed_directories_are_refused(daemon, dirs, ref):
    ref = ref.format(clips=dirs["clips"], outside=dirs["outside"])
    reply = _tts(daemon, ref_audio_path=ref, prompt_text="你好。", prompt_lang="zh")
    assert reply.status_code == 400, reply.text
    assert "ref_audio_path" in reply.json()["message"]
    refused = httpx.get(daemon.url + "/set_refer_audio", params={"refer_audio_path": ref}, timeout=30)
    assert refused.status_code == 400


def test_set_refer_audio_sets_the_clip_of_requests_without_one(daemon, dirs):
    clip = dirs["clips"] / "b.wav"
    expected = streamed(daemon, clip)
    assert httpx.get(daemon.url + "/set_sovits_weights", timeout=30, params={
        "weights_path": str(next((dirs["voices"] / VOICE).glob("*.pth")))}).status_code == 200
    assert httpx.get(daemon.url + "/set_refer_audio", params={"refer_audio_path": str(clip)},
                     timeout=30).status_code == 200
    reply = _tts(daemon, prompt_text="你好，这是参考。", prompt_lang="zh")
    assert reply.status_code == 200, reply.text
    assert near(np.frombuffer(reply.content, np.int16), expected)
    wait_idle(daemon)


# ---- a family's new option reaches every interface ---------------------------------------------------------
def test_a_new_option_reaches_the_cli_the_client_and_both_http_routes(daemon, monkeypatch):
    from voxpipe.daemon.cli import build_parser
    from voxpipe.daemon.commands.say import options
    from voxpipe.stages import families

    # The command line: the family registered as the daemon's config registers it.
    monkeypatch.setitem(families._registered, "gsv-moods", "tests.family_with_new_option:MoodFamily")
    args = build_parser("say").parse_args(["say", "--voice", MOODY, "--mood", "angry", "--sample-steps", "8", "hi"])
    assert options(args)["mood"] == "angry" and options(args)["sample_steps"] == 8
    with pytest.raises(SystemExit):
        build_parser("say").parse_args(["say", "--mood", "sad", "hi"])
    # The client library, and the daemon's check of the declared choices.
    with daemon.client() as client:
        assert len(client.synthesize(TEXT, MOODY, mood="angry", **GREEDY).samples) > 0
        with pytest.raises(VoxpipeError) as caught:
            client.synthesize(TEXT, MOODY, mood="sad")
        assert caught.value.code == "bad_option" and "mood" in caught.value.message
    # Both HTTP routes: honoured (not reported ignored), and checked.
    tts = _tts(daemon, ref_audio_path=MOODY, mood="angry")
    speech = httpx.post(daemon.url + "/v1/audio/speech", timeout=120, json={
        "input": TEXT, "voice": MOODY, "response_format": "pcm", "mood": "angry", **GREEDY})
    for reply in (tts, speech):
        assert reply.status_code == 200, reply.text
        assert "mood" not in reply.headers.get("x-voxpipe-ignored", "")
    assert _tts(daemon, ref_audio_path=MOODY, mood="sad").status_code == 400
    assert httpx.post(daemon.url + "/v1/audio/speech", timeout=60, json={
        "input": TEXT, "voice": MOODY, "mood": "sad"}).status_code == 400


def test_api_v2_parameters_are_honoured_or_reported(daemon):
    reply = _tts(daemon, ref_audio_path=VOICE, top_p=0.9, temperature=0.8, batch_size=4, split_bucket=True,
                 parallel_infer=True, fragment_interval=0.3, text_split_method="cut5", speed_factor=1.0)
    assert reply.status_code == 200, reply.text
    from voxpipe.stages import families

    unread = set() if "text_lang" in {o.name for o in families.options_of("gpt-sovits")} else {"text_lang"}
    assert set(reply.headers["x-voxpipe-ignored"].split(",")) == {"batch_size", "parallel_infer", "split_bucket",
                                                                  *unread}
    refused = _tts(daemon, ref_audio_path=VOICE, super_sampling=True)
    assert refused.status_code == 400 and "super_sampling" in refused.json()["message"]
    steps = _tts(daemon, ref_audio_path=VOICE, sample_steps=8)
    assert steps.status_code == 400 and "v3/v4" in steps.json()["message"]  # a v2 voice has no CFM steps


def test_fragment_interval_puts_silence_between_fragments(daemon):
    text = "Hello there. Goodbye now."
    with daemon.client() as client:
        plain = client.synthesize(text, VOICE, policy="cut5", **GREEDY)
        paused = client.synthesize(text, VOICE, policy="cut5", fragment_interval=0.5, **GREEDY)
    assert plain.chunks == paused.chunks == 2
    assert len(paused.samples) - len(plain.samples) == round(0.5 * 32000)
