"""Reading GPT-SoVITS voices as users have them: checkpoint formats (version tags, fp16,
weight norm, pickled HParams configs), voice.toml, and the errors for what we do not run."""
from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow  # random GPT-SoVITS voice files written and loaded: seconds each

from voxpipe.stages.engines.base import EngineError, EngineSettings  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models import checkpoints  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import reference_clip, write_gpt, write_sovits  # noqa: E402
from voxpipe.stages.families.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog, VoiceError  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gsv-files")
    g = torch.Generator().manual_seed(0)
    write_gpt(d / "a.ckpt", g, 1.0)
    write_sovits(d / "v2.pth", "v2", g)
    write_sovits(d / "pro.pth", "v2ProPlus", g)
    return d


def _voice_dir(root: Path, files: Path, toml: str) -> Path:
    import soundfile

    d = root / "myvoice"
    d.mkdir()
    (d / "a.ckpt").write_bytes((files / "a.ckpt").read_bytes())
    (d / "b.pth").write_bytes((files / "v2.pth").read_bytes())
    soundfile.write(str(d / "ref.wav"), reference_clip(), 32000)
    (d / "voice.toml").write_text(toml, encoding="utf-8")
    return d


GOOD_TOML = 'version = "v2"\ngpt = "a.ckpt"\nsovits = "b.pth"\npretrained_dir = "nothing-here"\n' \
            '[reference]\naudio = "ref.wav"\ntext = "你好。"\nlanguage = "zh"\n[defaults]\ntop_k = 5\n'


def test_version_tags_and_formats(files):
    assert (files / "v2.pth").read_bytes()[:2] == b"PK"
    assert (files / "pro.pth").read_bytes()[:2] == b"06"
    version, config, weights = checkpoints.load_sovits(files / "pro.pth")
    assert version == "v2ProPlus" and config["data"]["sampling_rate"] == 32000
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert not any(k.endswith(("weight_g", "weight_v")) for k in weights)
    assert checkpoints.load_sovits(files / "v2.pth")[0] == "v2"
    gpt_config, gpt_weights = checkpoints.load_gpt(files / "a.ckpt")
    assert gpt_config["model"]["EOS"] == 1024 and all(k.startswith("model.") for k in gpt_weights)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_weight_norm_is_folded_as_torch_computes_it():
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))
    state = {k: v.half() for k, v in conv.state_dict().items()}
    folded = checkpoints.fold_weight_norm({"dec.ups.0." + k: v for k, v in state.items()})
    ref = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))
    ref.load_state_dict({k: v.float() for k, v in state.items()})
    torch.nn.utils.remove_weight_norm(ref)
    assert torch.equal(folded["dec.ups.0.weight"], ref.weight.detach())


@pytest.mark.parametrize("tag,name", [(b"02", "v3"), (b"03", "v3"), (b"04", "v4")])
def test_v3_v4_files_read_as_v2_say_which_version_to_set(files, tmp_path, tag, name):
    """The v2 loader meets a v3/v4 file when voice.toml says otherwise: the error says what to write."""
    path = tmp_path / "new.pth"
    path.write_bytes(tag + (files / "v2.pth").read_bytes()[2:])
    with pytest.raises(checkpoints.CheckpointError, match=f'a SoVITS {name} checkpoint; say version = "{name}"'):
        checkpoints.load_sovits(path)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"xx not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="bad.pth"):
        checkpoints.load_sovits(path)


def test_config_pickled_as_gpt_sovits_hparams_loads(files, tmp_path):
    """GPT-SoVITS pickles its training config as `utils.HParams`; we read it without
    running pickled code (weights-only unpickling with a stand-in class)."""
    obj = torch.load(files / "v2.pth", map_location="cpu", weights_only=False)
    module = types.ModuleType("utils")

    class HParams:
        def __init__(self, **kw):
            for k, v in kw.items():
                setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    module.HParams = HParams
    sys.modules["utils"] = module
    try:
        obj["config"] = HParams(**obj["config"])
        buffer = io.BytesIO()
        torch.save(obj, buffer)
    finally:
        del sys.modules["utils"]
    path = tmp_path / "hparams.pth"
    path.write_bytes(buffer.getvalue())
    version, config, _ = checkpoints.load_sovits(path)
    assert version == "v2" and config["model"]["hidden_channels"] == 192


def test_voice_toml_is_checked(files, tmp_path):
    d = _voice_dir(tmp_path, files, GOOD_TOML)
    cfg = read_voice_toml(d)
    assert cfg.defaults["top_k"] == 5 and cfg.defaults["repetition_penalty"] == 1.35
    assert cfg.gpt.is_absolute() and cfg.pretrained_dir.name == "nothing-here"

    for toml, message in ((GOOD_TOML.replace('"v2"', '"v5"'), "unknown version 'v5'"),
                          (GOOD_TOML.replace("top_k = 5", "sample_steps = 8"), "unknown default 'sample_steps'"),
                          (GOOD_TOML.replace('"b.pth"', '"missing.pth"'), "sovits file 'missing.pth' not found"),
                          (GOOD_TOML.replace("top_k = 5", "top_kk = 5"), "unknown default 'top_kk'"),
                          (GOOD_TOML.replace('text = "你好。"\n', ""), "reference.text")):
        (d / "voice.toml").write_text(toml, encoding="utf-8")
        with pytest.raises(VoiceConfigError, match=message):
            read_voice_toml(d)


def test_catalog_lists_gsv_voices_and_reports_broken_ones(files, tmp_path):
    d = _voice_dir(tmp_path, files, GOOD_TOML)
    catalog = VoiceCatalog(tmp_path)
    spec = catalog.get("myvoice")
    assert spec.family == "gpt-sovits" and spec.sample_rate == 32000 and spec.settings.defaults["noise_scale"] == 0.5
    assert catalog.get("joe").family == "piper"  # Piper voices unchanged
    (d / "voice.toml").write_text(GOOD_TOML.replace('"v2"', '"v9"'), encoding="utf-8")
    catalog.rescan()
    with pytest.raises(VoiceError, match="v9"):
        catalog.get("myvoice")


def test_missing_pretrained_model_is_named(files, tmp_path):
    pytest.importorskip("transformers")
    from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine

    _voice_dir(tmp_path, files, GOOD_TOML)
    spec = VoiceCatalog(tmp_path).get("myvoice")
    with pytest.raises(EngineError, match="chinese-hubert-base.*not found"):
        GptSovitsEngine(EngineSettings()).load_voice(spec)


def test_planner_cuts_gsv_text_into_runs_with_sampling(files, tmp_path):
    from voxpipe.config import Config
    from voxpipe.ipc.messages import SynthesisRequest, synthesis_options
    from voxpipe.stages.frontend.planner import PlanError, Planner

    _voice_dir(tmp_path, files, GOOD_TOML)
    planner = Planner(Config(), VoiceCatalog(tmp_path))
    request = SynthesisRequest("r1", "你好，世界。This is a test. 好", "myvoice", False, synthesis_options(seed=5, top_p=0.8))
    plan = planner.plan(request, deadline=1e12)
    assert plan.chunks and plan.spec.sample_rate == 32000
    for chunk in plan.chunks:
        runs, options = chunk.inputs.extras, chunk.inputs.options
        assert chunk.family == "gpt-sovits"
        assert sum(runs["phones"]) == len(chunk.inputs.ids) > 0
        assert len(runs["langs"]) == len(runs["texts"]) == len(runs["word2ph"]) == len(runs["phones"])
        for lang, text, w2p, n in zip(runs["langs"], runs["texts"], runs["word2ph"], runs["phones"]):
            assert (sum(w2p) == n and len(w2p) == len(text)) if lang == "zh" else w2p == []
        assert (options["top_k"], options["top_p"], options["repetition_penalty"]) == (5, 0.8, 1.35)  # voice.toml's top_k
    assert {lang for c in plan.chunks for lang in c.inputs.extras["langs"]} == {"zh", "en"}
    assert [c.seed for c in plan.chunks] == [5 + i for i in range(len(plan.chunks))]
    with pytest.raises(PlanError) as err:
        planner.plan(SynthesisRequest("r2", "你好", "myvoice", False, synthesis_options(temperature=0.0)), 1e12)
    assert err.value.code == "bad_option"
