"""Requests' own reference clips before any model sees them: which paths api_v2 may name,
how uploads are read, and the frontend's store of decoded clips (content-addressed,
checked for length and size, bounded)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")

from voxpipe.ipc import codec  # noqa: E402
from voxpipe.ipc.messages import Reference, SynthesisRequest, synthesis_options  # noqa: E402
from voxpipe.stages.families.gpt_sovits.http.files import allowed_clip  # noqa: E402
from voxpipe.stages.http.errors import HttpError  # noqa: E402
from voxpipe.stages.http.params import base64_clip  # noqa: E402
from voxpipe.stages.references import ReferenceError, ReferenceStore, decode_clip  # noqa: E402

RULE = (3.0, 10.0)


def wav(seconds: float, rate: int = 16000, channels: int = 1, fmt: str = "WAV") -> bytes:
    audio = np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32) * 0.3
    out = io.BytesIO()
    soundfile.write(out, np.repeat(audio[:, None], channels, axis=1), rate, format=fmt)
    return out.getvalue()


@pytest.fixture
def tree(tmp_path) -> dict[str, Path]:
    voices, clips, outside = tmp_path / "voices", tmp_path / "clips", tmp_path / "outside"
    for d in (voices / "amy", clips, outside):
        d.mkdir(parents=True)
    (voices / "amy" / "mood.wav").write_bytes(b"x")
    (clips / "a.wav").write_bytes(b"x")
    (outside / "b.wav").write_bytes(b"x")
    (clips / "out.wav").symlink_to(outside / "b.wav")
    (clips / "in.wav").symlink_to(clips / "a.wav")
    return {"voices": voices, "clips": clips, "outside": outside}


def test_clips_only_inside_the_voices_directory_and_the_reference_dirs(tree):
    voices, clips = tree["voices"], [tree["clips"]]
    assert allowed_clip("amy/mood.wav", voices, clips) == ((voices / "amy" / "mood.wav").resolve(), voices.resolve())
    assert allowed_clip(str(tree["clips"] / "a.wav"), voices, clips)[1] == tree["clips"].resolve()
    assert allowed_clip(str(tree["clips"] / "in.wav"), voices, clips)[0] == (tree["clips"] / "a.wav").resolve()
    for refused in (str(tree["outside"] / "b.wav"), str(tree["clips"] / "out.wav"), f"{tree['clips']}/../outside/b.wav",
                    "../outside/b.wav", str(tree["clips"]), "amy", "amy/missing.wav", "/etc/passwd", "amy/mood.wav\0",
                    ""):
        assert allowed_clip(refused, voices, clips) is None, refused
    assert allowed_clip(str(tree["clips"] / "a.wav"), None, []) is None  # no directories: nothing


def test_base64_uploads_are_checked():
    data = wav(4.0)
    assert base64_clip(base64.b64encode(data).decode(), "ref_audio_base64", len(data)) == data
    assert base64_clip("data:audio/wav;base64," + base64.b64encode(data).decode(), "x", len(data)) == data
    for bad, limit, fragment in (("not base64!", 1 << 20, "base64"), (base64.b64encode(data).decode(), 1024, "KiB"),
                                 (42, 1024, "base64 text")):
        with pytest.raises(HttpError) as caught:
            base64_clip(bad, "ref_audio_base64", limit)
        assert caught.value.code == "bad_reference" and fragment in caught.value.message


def test_the_store_decodes_once_and_checks_length_and_size(tmp_path):
    store = ReferenceStore(tmp_path / "refs", max_clip_bytes=600 * 1024)
    first = store.put(wav(4.0, channels=2), RULE)
    assert store.put(wav(4.0, channels=2), RULE) == first  # content-addressed: the same file
    audio, rate = soundfile.read(first, dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and len(audio) == 64000  # mono, its own rate
    for data, fragment in ((wav(12.0), "12.0 s"), (wav(1.0), "1.0 s"), (b"RIFF junk" * 40, "cannot be decoded"),
                           (wav(6.0, rate=48000, channels=2), "KiB")):
        with pytest.raises(ReferenceError, match=fragment.replace(".", r"\.")):
            store.put(data, RULE)


def test_the_store_reads_compressed_clips_through_pyav(tmp_path):
    pytest.importorskip("av")
    data = wav(4.0, rate=22050, fmt="OGG")
    audio, rate = decode_clip(data)
    assert rate == 22050 and abs(len(audio) / rate - 4.0) < 0.1


def test_the_store_is_bounded(tmp_path):
    store = ReferenceStore(tmp_path / "refs", max_clip_bytes=1 << 20, max_bytes=600 * 1024)
    paths = [store.put(wav(4.0 + i / 10), RULE) for i in range(3)]  # ~256 KiB each as float32
    assert not paths[0].exists() and paths[2].exists() and store.bytes <= 600 * 1024


def test_a_reference_travels_in_one_request_message():
    clip = wav(10.0, rate=48000)  # ~940 KiB: larger than msgpack's default bin limit
    request = SynthesisRequest("r", "hi", "v", False, synthesis_options(reference=Reference(clip, "t", "en", [clip])))
    assert codec.decode(codec.encode(request)).options.reference == request.options.reference
