"""Voices as users have them: the pretrained folder upstream ships (fp16 `torch_dtype`
in its config.json files), a SoVITS `.pth` as upstream's trainer saves it, a base GPT
laid out as the pretrained s1 files, voice.toml without `version`, and loading errors
that name the voice and the reason."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow]  # a v2ProPlus voice written as upstream's files, loaded

from tests.gsv_upstream_files import pretrained_as_shipped, save_base_gpt, save_sovits_as_trainer  # noqa: E402
from voxpipe.stages.engines.base import EngineError, EngineSettings  # noqa: E402
from voxpipe.stages.families.base import RunnerSettings  # noqa: E402
from voxpipe.stages.families.gpt_sovits import GptSovitsFamily  # noqa: E402
from voxpipe.stages.families.gpt_sovits.item import GsvItem, item_chunk  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models import features  # noqa: E402
from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.voice_config import read_voice_toml  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    """A v2ProPlus voice rewritten as upstream's files, with voice.toml leaving out `version`."""
    root = tmp_path_factory.mktemp("gsv-upstream")
    voice = write_random_gsv_voice(root, "pro", "v2ProPlus", seed=3, max_sec=0.4)
    pretrained_as_shipped(root / ".gsv-pretrained")
    sovits, gpt = next(voice.glob("*.pth")), next(voice.glob("*.ckpt"))
    save_sovits_as_trainer(sovits, sovits)
    save_base_gpt(gpt, voice / "s1bert25hz-base.ckpt")
    toml = (voice / "voice.toml").read_text(encoding="utf-8")
    toml = toml.replace('version = "v2ProPlus"\n', "").replace(gpt.name, "s1bert25hz-base.ckpt")
    (voice / "voice.toml").write_text(toml, encoding="utf-8")
    return root


def _item(ids: list[int]) -> GsvItem:
    return GsvItem(np.asarray(ids, dtype=np.int64), 0.0, 1.0, 7, text_segments=(("en", "", len(ids), ()),), top_k=1,
                   repetition_penalty=1.0)


def _speak(voice, item: GsvItem) -> np.ndarray:
    """A chunk's whole audio through the family's serving runner, as a worker runs it."""
    runner = GptSovitsFamily().runner(GptSovitsEngine(EngineSettings(threads=1)), RunnerSettings())
    runner.admit(voice, item_chunk(item, "r"))
    pieces = []
    while len(runner):
        result = runner.step(0.0)
        assert not result.failed and not result.requeue
        pieces += [p.audio for p in result.pieces]
    return np.concatenate(pieces)


def test_upstream_files_are_what_they_claim(voices):
    config = json.loads((voices / ".gsv-pretrained" / features.BERT_DIR / "config.json").read_text())
    assert config["torch_dtype"] == "float16"
    state = torch.load(voices / ".gsv-pretrained" / features.HUBERT_DIR / "pytorch_model.bin", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    pth = next((voices / "pro").glob("*.pth")).read_bytes()
    assert pth[:2] == b"06" and b"utils\nHParams" in pth
    assert read_voice_toml(voices / "pro").version is None


def test_upstream_voice_loads_in_float32_and_speaks(voices):
    engine = GptSovitsEngine(EngineSettings(threads=1))
    loaded = engine.load_voice(VoiceCatalog(voices).get("pro"))
    model = loaded.model
    assert model.version == "v2ProPlus"  # from the checkpoint: voice.toml says nothing
    hubert = model.shared.get_hubert()
    _, bert = model.shared.get_bert()
    assert {p.dtype for m in (hubert, bert, model.shared.get_sv()) for p in m.parameters()} == {torch.float32}
    audio = _speak(loaded, _item([95, 36, 138, 181, 12, 40]))
    assert audio.dtype == np.float32 and len(audio) > 0 and np.isfinite(audio).all()


def test_version_in_voice_toml_is_still_checked(voices, tmp_path):
    shutil.copytree(voices, tmp_path / "v", dirs_exist_ok=True)
    toml = tmp_path / "v" / "pro" / "voice.toml"
    toml.write_text('version = "v1"\n' + toml.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(EngineError, match="voice.toml says v1 but .* is a v2ProPlus model"):
        GptSovitsEngine(EngineSettings(threads=1)).load_voice(VoiceCatalog(tmp_path / "v").get("pro"))


def test_an_unexpected_loading_error_is_an_engine_error(voices, tmp_path):
    """A SoVITS config no check foresees (a hop of 0 samples fails inside torch's STFT when
    the prompt is built): the reason comes back as an EngineError naming the voice."""
    shutil.copytree(voices, tmp_path / "v", dirs_exist_ok=True)
    pth = next((tmp_path / "v" / "pro").glob("*.pth"))
    save_sovits_as_trainer(pth, pth, lambda config: config["data"].update(hop_length=0))
    with pytest.raises(EngineError, match=r"voice 'pro': cannot load \(RuntimeError"):
        GptSovitsEngine(EngineSettings(threads=1)).load_voice(VoiceCatalog(tmp_path / "v").get("pro"))


def test_a_broken_speaker_model_is_named(voices, tmp_path):
    shutil.copytree(voices, tmp_path / "v", dirs_exist_ok=True)
    sv = next((tmp_path / "v" / ".gsv-pretrained").rglob("*.ckpt"))
    sv.write_bytes(b"truncated")
    with pytest.raises(EngineError, match="speaker-verification model .* cannot load"):
        GptSovitsEngine(EngineSettings(threads=1)).load_voice(VoiceCatalog(tmp_path / "v").get("pro"))
