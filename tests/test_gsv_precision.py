"""The precision of a GPT-SoVITS voice's parts: each precision keeps its own bound against
fp32 (which stays the reference of the exactness tests), `auto` probes once per machine,
caches and reports its choice, and a precision the machine cannot run falls back to fp32."""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from voxpipe.stages.engines.base import EngineSettings  # noqa: E402
from voxpipe.stages.engines.signal_quality import snr_db  # noqa: E402
from voxpipe.stages.families.gpt_sovits import precision  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.int8 import int8_available  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.static_decoder import StaticDecoder  # noqa: E402
from voxpipe.stages.families.gpt_sovits.engine import GptSovitsEngine  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_random_gsv_voice  # noqa: E402
from voxpipe.stages.families.gpt_sovits.voice_config import VoiceConfigError, read_voice_toml  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402
from tests.test_gsv_continuous import GREEDY, TEXTS, load_random_voice  # noqa: E402
from tests.test_gsv_static_decoder import CAPACITY, _lone, _seq, _static_logits  # noqa: E402

needs_int8 = pytest.mark.skipif(not int8_available(), reason="this torch build has no int8 backend")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return load_random_voice(tmp_path_factory.mktemp("gsv-precision"), "p", 3)


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsv-precision-voices")
    write_random_gsv_voice(root, "g", "v2", seed=2)
    return root


def _fed(model):
    """The test texts as sequences, and each one's lone fp32 greedy tokens to feed back."""
    cases = [(model, text, 30, 0) for text in TEXTS]
    return [_seq(c, i, GREEDY) for i, c in enumerate(cases)], [_lone(c, GREEDY)[0] for c in cases]


@pytest.mark.slow
@needs_int8
def test_int8_decoder_steps_stay_near_fp32(model):
    """Int8 weights (one scale per output channel) and activations quantized per step:
    the same fed tokens give logits within 5 % of their range of fp32's, and the same
    greedy token almost everywhere (a random model's logits are close together; the
    probe takes int8 only where every greedy token matches)."""
    seqs, tokens = _fed(model)
    reference = _static_logits(StaticDecoder(model.t2s, 4, CAPACITY), seqs, tokens)
    got = _static_logits(StaticDecoder(model.t2s, 4, CAPACITY, int8=True), seqs, tokens)
    span = max((r.max() - r.min()).item() for r in reference)
    error = max((g - r).abs().max().item() for g, r in zip(got, reference))
    agree = sum((g.argmax(-1) == r.argmax(-1)).sum().item() for g, r in zip(got, reference))
    total = sum(len(r) for r in reference)
    assert error <= 0.05 * span, f"int8 logits error {error:.3g} over a range of {span:.3g}"
    assert agree >= 0.8 * total, f"greedy agreement {agree}/{total}"
    # The prefill (first row of each) is float32 in both.
    for g, r in zip(got, reference):
        torch.testing.assert_close(g[:1], r[:1], rtol=0, atol=1e-4)


@pytest.mark.slow
@needs_int8
def test_int8_prefills_stay_near_fp32_and_leave_the_steps_as_they_were(model):
    """Int8 prefills (the same int8 products as the steps, over every row of the prefill):
    each text's first logits within 5 % of their range of fp32's, the same first greedy
    token; with fp32 steps after them, later logits stay near too (only the cached keys
    and values of the prefill differ)."""
    seqs, tokens = _fed(model)
    reference = _static_logits(StaticDecoder(model.t2s, 4, CAPACITY), seqs, tokens)
    seqs, tokens = _fed(model)
    got = _static_logits(StaticDecoder(model.t2s, 4, CAPACITY, int8_prefill=True), seqs, tokens)
    for g, r in zip(got, reference):
        span = (r.max() - r.min()).item()
        assert (g[:1] - r[:1]).abs().max().item() <= 0.05 * span
        assert g[0].argmax() == r[0].argmax()
        assert (g - r).abs().max().item() <= 0.05 * span
        assert not torch.equal(g[:1], r[:1])  # int8 did run: fp32 would be equal


@pytest.mark.slow
def test_bf16_vocoder_stays_within_its_bound(model):
    """bf16 is a candidate only on CPUs with bf16 units or GPUs, but it runs anywhere: its
    audio stays within the renderer's 30 dB of fp32's."""
    synth, prompt = model.synth, model._prompt()
    z = torch.randn(1, model.cfg.inter_channels, 40, generator=torch.Generator().manual_seed(0))
    fp32 = synth.run_vocoder(z, prompt.ge)[0, 0].numpy()
    synth.set_vocoder_precision("bf16")
    try:
        assert synth.vocoder_half is not None and next(synth.vocoder_half.parameters()).dtype == torch.bfloat16
        bf16 = synth.run_vocoder(z, prompt.ge)[0, 0].numpy()
    finally:
        synth.set_vocoder_precision("fp32")
    assert synth.vocoder_half is None
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert snr_db(fp32, bf16) >= precision.MIN_RENDERER_SNR_DB
    assert snr_db(fp32, fp32) == float("inf")


@pytest.mark.slow
def test_auto_probes_once_caches_and_reports(voices_dir, tmp_path):
    cache = tmp_path / "choices"
    spec = VoiceCatalog(voices_dir).get("g")

    def load():
        options = {"gsv_precision_cache_dir": str(cache), "busy_dir": str(tmp_path / "busy")}
        return GptSovitsEngine(EngineSettings(threads=1, options=options)).load_voice(spec)

    first = load()
    assert first.details["precision"].endswith("(probed)")
    notes = first.details["precision_notes"]
    assert any(n.startswith("decoder: fp32 ") for n in notes), notes
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    second = load()
    assert second.details["precision"] == first.details["precision"].replace("(probed)", "(cached)")
    assert first.model.t2s.precision == second.model.t2s.precision in precision.CHOICES["decoder"]
    assert first.model.t2s.prefill_precision == second.model.t2s.prefill_precision in precision.CHOICES["prefill"]
    if int8_available():
        assert any(n.startswith("prefill: fp32 ") for n in notes), notes
    # The same weights elsewhere (another folder, other file times) share the choice;
    # other weights are probed again, under another key.
    import shutil

    shutil.copytree(voices_dir, tmp_path / "copy")
    spec = VoiceCatalog(tmp_path / "copy").get("g")
    assert load().details["precision"].endswith("(cached)")
    write_random_gsv_voice(tmp_path / "copy", "g", "v2", seed=5)
    spec = VoiceCatalog(tmp_path / "copy").get("g")
    assert load().details["precision"].endswith("(probed)") and len(list(cache.glob("*.json"))) == 2


@pytest.mark.slow
def test_configured_precision_is_applied_without_a_probe(voices_dir, tmp_path):
    spec = VoiceCatalog(voices_dir).get("g")
    options = {"gsv_precision_cache_dir": str(tmp_path), "gsv_decoder_precision": "fp32",
               "gsv_renderer_precision": "fp32", "gsv_prefill_precision": "fp32"}
    voice = GptSovitsEngine(EngineSettings(threads=1, options=options)).load_voice(spec)
    assert voice.details["precision"] == "decoder fp32, prefill fp32, renderer fp32 (configured)"
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_without_bf16_units_bf16_falls_back_to_fp32(model, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert precision.runnable("renderer", torch.device("cpu")) == ["fp32"]
    choice = precision.choose(model, {"decoder": "fp32", "renderer": "bf16"}, None)
    assert (choice.decoder, choice.renderer) == ("fp32", "fp32")
    assert model.synth.vocoder_precision == "fp32" and model.synth.vocoder_half is None
    assert any("renderer bf16 is not run at speed here" in note for note in choice.notes)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert "bf16" in precision.runnable("renderer", torch.device("cpu"))


@pytest.mark.slow
def test_a_slower_or_inexact_candidate_never_wins(model, monkeypatch):
    """The probe keeps fp32 unless a candidate within bounds is MIN_GAIN faster."""
    timings = {"fp32": 1.0, "int8": 0.5, "bf16": 0.99}

    def run(_model, candidate, prefill="fp32"):
        seconds = timings[candidate] if prefill == "fp32" else timings[prefill]
        return precision._Decoded(seconds, seconds, ["same" if "int8" not in (candidate, prefill) else "other"])

    monkeypatch.setattr(precision, "_decode", run)
    monkeypatch.setattr(precision, "_same_tokens", lambda ref, out: (out == ref, "" if out == ref else "differs"))
    notes: list[str] = []
    decodes = precision._Decodes(model)
    assert precision._probe("decoder", model, ["fp32", "bf16", "int8"], notes, decodes, "fp32") == "fp32"
    timings["bf16"] = 0.5
    decodes = precision._Decodes(model)
    assert precision._probe("decoder", model, ["fp32", "bf16", "int8"], notes, decodes, "fp32") == "bf16"
    assert notes[-1].endswith("-> bf16") and "differs" in notes[-1]
    # The prefill beside the steps' choice: int8 prefills that move a token lose too.
    assert precision._probe("prefill", model, ["fp32", "int8"], notes, decodes, "bf16") == "fp32"
    assert notes[-1].startswith("prefill: fp32 500 ms, int8 500 ms (differs)")


@pytest.mark.slow
def test_voice_toml_precision_table_is_checked(voices_dir, tmp_path):
    import shutil

    shutil.copytree(voices_dir, tmp_path / "v")
    toml = tmp_path / "v" / "g" / "voice.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text + '\n[precision]\ndecoder = "int8"\nrenderer = "auto"\nprefill = "int8"\n', encoding="utf-8")
    assert read_voice_toml(tmp_path / "v" / "g").precision == {"decoder": "int8", "renderer": "auto", "prefill": "int8"}
    for bad, needle in (('renderer = "int8"', "precision.renderer 'int8'"), ('vocoder = "fp32"', "unknown part"),
                        ('prefill = "bf16"', "precision.prefill 'bf16'")):
        toml.write_text(text + f"\n[precision]\n{bad}\n", encoding="utf-8")
        with pytest.raises(VoiceConfigError, match=needle):
            read_voice_toml(tmp_path / "v" / "g")


def test_daemon_config_checks_the_precisions():
    from voxpipe.config import Config, ConfigError, validate

    config = Config()
    assert (config.worker.gsv_decoder_precision, config.worker.gsv_renderer_precision) == ("auto", "auto")
    config.worker.gsv_renderer_precision = "int8"
    with pytest.raises(ConfigError, match="gsv_renderer_precision"):
        validate(config)
    config = Config()
    assert config.worker.gsv_prefill_precision == "auto"
    config.worker.gsv_prefill_precision = "fp16"
    with pytest.raises(ConfigError, match="gsv_prefill_precision"):
        validate(config)


def test_status_shows_each_voices_precision():
    from voxpipe.daemon.commands.status import render

    status = {"ready": True, "processes": [{"role": "worker", "name": "w0", "pid": 1, "alive": True, "ready": True,
                                            "stats": {"voices": ["g"], "voice_details": {
                                                "g": {"precision": "decoder int8, prefill int8, renderer fp32 (probed)"}}}}]}
    assert "voice g: decoder int8, prefill int8, renderer fp32 (probed)" in render(status)


@pytest.mark.slow
def test_probe_time_is_small_on_a_tiny_voice(voices_dir, tmp_path):
    """The probe runs at a voice's first load: on a tiny voice it adds little."""
    spec = VoiceCatalog(voices_dir).get("g")
    options = {"gsv_precision_cache_dir": str(tmp_path)}
    started = time.perf_counter()
    voice = GptSovitsEngine(EngineSettings(threads=1, options=options)).load_voice(spec)
    assert voice.details["precision"].endswith("(probed)") and time.perf_counter() - started < 120


def test_workers_probing_one_model_at_once_take_turns(tmp_path):
    """A second process probing the same model waits for the first one's lock (and then
    reads its cached choice), so every worker of a daemon runs a voice alike."""
    import threading

    from voxpipe.stages.families.gpt_sovits.precision import _probe_lock

    entered = threading.Event()

    def second() -> None:
        with _probe_lock(tmp_path, "key"):
            entered.set()

    with _probe_lock(tmp_path, "key"):
        other = threading.Thread(target=second)
        other.start()
        assert not entered.wait(0.5)  # held: the other one waits however long it is given
    other.join(10)
    assert entered.is_set()
