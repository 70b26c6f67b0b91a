"""Our GPT-SoVITS models against the reference implementation (gpt-sovits-cpufast 0.1.0),
on random-weight voices of every supported version, written in GPT-SoVITS's own formats.

With greedy decoding (top_k=1, no repetition penalty) and noise_scale=0 the semantic
tokens must be equal and the audio equal within 1e-3. The reference runs in a subprocess
(tests/gsv_reference_runner.py). CI installs it with:

    pip install --no-deps --target .cache/gsv-reference gpt-sovits-cpufast==0.1.0 \
        torchmetrics lightning-utilities einops

(`--target`, not into the venv: the package installs top-level `tools`, `config`, `api`
modules that would shadow voxpipe's own `tools` package.) VOXPIPE_GSV_REFERENCE may point
elsewhere.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("soxr")

pytestmark = [pytest.mark.slow, pytest.mark.reference]  # random voices run through ours and the reference runner

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("VOXPIPE_GSV_REFERENCE", ROOT / ".cache" / "gsv-reference"))
if not (REFERENCE / "GPT_SoVITS" / "AR" / "models" / "t2s_model.py").is_file():
    pytest.skip(f"reference GPT-SoVITS not installed at {REFERENCE} (pip install --no-deps --target "
                ".cache/gsv-reference gpt-sovits-cpufast==0.1.0 torchmetrics lightning-utilities einops)",
                allow_module_level=True)

from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.t2s import Sampling  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.voice import GsvModel, TextSegment, VoiceFiles  # noqa: E402

GREEDY = Sampling(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
PROMPT = [TextSegment("zh", "参考音频。", (318, 122, 225, 109, 300, 200, 250, 110, 3), (2, 2, 2, 2, 1))]
TARGET = [TextSegment("zh", "你好，", (300, 200, 250, 110, 2), (2, 2, 1)),
          TextSegment("en", "hello", (95, 36, 138, 181), ())]
CASES = {"v1": ("v1", 3), "v2": ("v2", 0), "v2eos": ("v2", 0), "v2Pro": ("v2Pro", 1), "v2ProPlus": ("v2ProPlus", 2)}


def _boost_eos(directory: Path) -> None:
    """Make EOS win as soon as it is allowed: a large last-layer norm bias and an EOS row
    aligned with it, so the decoder's own stop path is compared too."""
    ckpt = next(directory.glob("*.ckpt"))
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    w = obj["weight"]
    last = max(int(k.split(".")[3]) for k in w if k.startswith("model.h.layers."))
    bias = torch.full_like(w[f"model.h.layers.{last}.norm2.bias"], 3.0)
    w[f"model.h.layers.{last}.norm2.bias"] = bias
    w["model.ar_predict_layer.weight"][1024] = bias
    torch.save(obj, ckpt)


def _files(directory: Path) -> VoiceFiles:
    return VoiceFiles(next(directory.glob("*.ckpt")), next(directory.glob("*.pth")),
                      directory.parent / ".gsv-pretrained", directory / "reference.wav")


def _segment_json(seg: TextSegment) -> dict:
    return {"lang": seg.lang, "norm_text": seg.norm_text, "phone_ids": list(seg.phone_ids), "word2ph": list(seg.word2ph)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    torch.set_num_threads(1)
    voices = tmp_path_factory.mktemp("gsv-voices")
    ours, cases = {}, []
    for name, (version, seed) in CASES.items():
        if name == "v2eos":
            shutil.copytree(voices / "v2", voices / name, ignore=shutil.ignore_patterns("voice.toml"))
            for p in (voices / name).iterdir():
                p.rename(p.with_name(p.name.replace("v2", "v2eos", 1)))
            _boost_eos(voices / name)
        else:
            write_random_gsv_voice(voices, name, version, seed=seed, max_sec=1.0)
        files = _files(voices / name)
        model = GsvModel(files)
        model.build_prompt(PROMPT)
        decoded = model.semantic_tokens(TARGET, GREEDY, seed=0)
        phone_ids = [i for s in TARGET for i in s.phone_ids]
        audio = model.render(decoded.tokens, phone_ids, noise_scale=0.0)
        ours[name] = (model, decoded, audio)
        cases.append({"gpt": str(files.gpt), "sovits": str(files.sovits), "pretrained": str(files.pretrained),
                      "ref_audio": str(files.ref_audio), "prompt": [_segment_json(s) for s in PROMPT],
                      "target": [_segment_json(s) for s in TARGET], "noise_scale": 0.0,
                      "sampling": {"top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0},
                      "output": str(voices / f"{name}.npz")})
    (voices / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "gsv_reference_runner.py"), str(REFERENCE),
                          str(voices / "cases.json")], capture_output=True, text=True, timeout=600, cwd=voices)
    assert run.returncode == 0, f"reference runner failed:\n{run.stderr[-4000:]}"
    return {name: (*ours[name], np.load(voices / f"{name}.npz")) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_prompt_matches_reference(results, name):
    model, _, _, ref = results[name]
    assert model.version == CASES[name][0]
    assert model.prompt.tokens[0].tolist() == ref["prompt_tokens"].tolist()
    np.testing.assert_allclose(model.prompt.ge.numpy(), ref["ge"], atol=1e-4)


@pytest.mark.parametrize("name", list(CASES))
def test_tokens_and_audio_match_reference(results, name):
    """Equal tokens, and audio equal within 1e-3.

    Where EOS never comes (a random decoder rarely says it), both keep early_stop_num
    tokens: the reference's default decode generates one more and drops it."""
    _, decoded, audio, ref = results[name]
    assert decoded.tokens == ref["tokens"].tolist()
    if not decoded.stopped_by_eos:
        assert len(decoded.tokens) == 50  # early_stop_num = 50 * max_sec (1.0)
    expected = ref["audio"]
    assert audio.shape == expected.shape
    assert np.abs(audio).max() > 0.05  # a real signal, so that the tolerance means something
    assert np.abs(audio - expected).max() < 1e-3


def test_both_stop_paths_are_compared(results):
    assert results["v2eos"][1].stopped_by_eos
    assert len(results["v2eos"][1].tokens) == 11  # EOS is barred from the first 11 steps
    assert not results["v2"][1].stopped_by_eos
