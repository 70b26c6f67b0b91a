"""Model families as plug-ins: a toy family from the tests folder is served end to end
through one config line; options are declared once and checked; the pipeline's own
files never name a family."""
from __future__ import annotations

import io
import re
import shutil
import tokenize
from pathlib import Path

import numpy as np
import pytest

from voxpipe.ipc.errors import VoxpipeError
from voxpipe.stages import families
from voxpipe.stages.families.base import OptionError
from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice
from tests.daemon_proc import Daemon
from tests.toy_family import TONE_S, ToyFamily, write_toy_voice

ROOT = Path(__file__).resolve().parents[1]
TOY = {"toy": "tests.toy_family:ToyFamily"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    voices = tmp_path_factory.mktemp("voices")
    write_toy_voice(voices, "tone", sample_rate=16000)
    write_random_piper_voice(voices, "tiny", seed=1)
    work = tmp_path_factory.mktemp("daemon")
    with Daemon(work, workers=1, voices_dir=str(voices), preload=["joe"], families=TOY,
                frontend={"first_chunk": False}, merger={"crossfade_ms": 0.0}) as running:
        running.voices = voices
        yield running


@pytest.mark.e2e
@pytest.mark.slow
def test_a_toy_family_is_served_end_to_end(daemon):
    with daemon.client() as client:
        audio = client.synthesize("Abc de. Fgh!", "tone")
        assert audio.sample_rate == 16000
        # ids reach the toy engine one tone each: 8 letters, no crossfade
        assert len(audio.samples) == 8 * int(TONE_S * 16000)
        higher = client.synthesize("Abc de. Fgh!", "tone", pitch_scale=2.0)
        assert len(higher.samples) == len(audio.samples) and not np.array_equal(higher.samples, audio.samples)
        assert "tone" in client.status()["voices"]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("options, needle", [
    ({"pitch_scale": 9.0}, "pitch_scale=9.0 is outside"),
    ({"noise_scale": 0.5}, "unknown option"),  # a Piper option means nothing to this family
    ({"pitch_scale": "high"}, "must be a number"),
])
def test_a_family_checks_its_own_options(daemon, options, needle):
    with daemon.client() as client, pytest.raises(VoxpipeError) as err:
        client.synthesize("Abc.", "tone", **options)
    assert err.value.code == "bad_option" and needle in str(err.value)


@pytest.mark.e2e
@pytest.mark.slow
def test_other_families_keep_serving_beside_it(daemon):
    with daemon.client() as client:
        assert client.synthesize("Hello there.", "joe", noise_scale=0.0, noise_w=0.0).samples.size > 0
        with pytest.raises(VoxpipeError) as err:
            client.synthesize("Hello.", "joe", pitch_scale=2.0)
        assert err.value.code == "bad_option"


def worker_pid(daemon: Daemon) -> int:
    with daemon.client() as client:
        return next(p["pid"] for p in client.status()["processes"] if p["role"] == "worker")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_voice_removed_while_its_request_runs_is_answered_and_the_worker_lives(daemon):
    """The voice's folder goes away while its long request is being synthesized: the
    request ends with its audio or a typed error, and the same worker keeps serving."""
    pid = worker_pid(daemon)
    text = " ".join(f"Sentence number {n} goes on for a little while." for n in range(40))
    outcome: object
    with daemon.client() as client:
        stream = client.stream(text, "tiny", noise_scale=0.0, noise_w=0.0)
        fragments = iter(stream)
        next(fragments)  # the request is running: its first audio has arrived
        shutil.rmtree(daemon.voices / "tiny")
        try:
            for _ in fragments:
                pass
            outcome = stream.result
        except VoxpipeError as exc:
            outcome = exc
    assert not isinstance(outcome, VoxpipeError) or outcome.code in ("unknown_voice", "voice_unavailable"), outcome
    with daemon.client() as client:
        assert client.synthesize("Still here.", "joe").samples.size > 0
    assert worker_pid(daemon) == pid
    assert "Traceback" not in daemon.log()


def test_options_resolve_from_declared_defaults_and_voice_defaults():
    resolved = ToyFamily.options.resolve({}, {})
    assert resolved == {"pitch_scale": 1.0}
    assert ToyFamily.options.resolve({"pitch_scale": 2}, {}) == {"pitch_scale": 2.0}
    assert ToyFamily.options.resolve({}, {"pitch_scale": 0.5}) == {"pitch_scale": 0.5}
    with pytest.raises(OptionError, match="unknown option"):
        ToyFamily.options.resolve({"speed": 1.0}, {})


def test_gpt_sovits_sampling_options_are_declared_once():
    gsv = families.get("gpt-sovits")
    with pytest.raises(OptionError, match=r"top_p=0.0 is outside \(0.0, 1.0\]"):
        gsv.options.resolve({"top_p": 0.0}, {})
    with pytest.raises(OptionError, match="must be an integer"):
        gsv.options.resolve({"top_k": 2.5}, {})


def test_text_options_take_their_declared_choices():
    gsv = families.get("gpt-sovits")
    assert gsv.options.resolve({"text_lang": " JA "}, {})["text_lang"] == "ja"
    assert gsv.options.resolve({}, {"text_lang": "yue"})["text_lang"] == "yue"
    with pytest.raises(OptionError, match="text_lang='fr' is not one of zh, en, ja"):
        gsv.options.resolve({"text_lang": "fr"}, {})
    with pytest.raises(OptionError, match="text_lang must be text"):
        gsv.options.resolve({"text_lang": 1}, {})


def test_pipeline_files_do_not_name_a_family():
    """GPT-SoVITS (or any family) lives in its own folders; the pipeline's processes,
    messages and engine interface know families only through the interface."""
    pipeline = [*(ROOT / "stages" / "frontend").glob("*.py"), *(ROOT / "stages" / "worker").glob("*.py"),
                *(ROOT / "stages" / "merger").glob("*.py"), ROOT / "ipc" / "messages.py",
                ROOT / "stages" / "engines" / "base.py", ROOT / "stages" / "voices.py"]
    named = [(p.name, m.group(0)) for p in pipeline for text in _code(p)
             for m in re.finditer(r"gpt.?sovits|gsv|top_k|seg_langs|toy", text, re.IGNORECASE)]
    assert named == []


def _code(path: Path) -> list[str]:
    """Names and strings of a module, without comments and docstrings (which may give
    a family as an example)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t.string for t in tokens if t.type in (tokenize.NAME, tokenize.STRING) and not t.string.startswith('"""')]
