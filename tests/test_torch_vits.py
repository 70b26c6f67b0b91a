"""The PyTorch VITS against Piper's onnxruntime graphs, and the torch engine.

VOXPIPE_FULL_TESTS=1 compares every bench text (and every long-form sentence) instead of a
representative subset; VOXPIPE_BENCH=1 prints real-time factors of torch vs onnxruntime:
  OMP_WAIT_POLICY=PASSIVE VOXPIPE_BENCH=1 python -m pytest tests/test_torch_vits.py -s -k real_time
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

pytestmark = [pytest.mark.slow]  # VITS models in torch and onnxruntime, each test seconds

from voxpipe.stages.families.piper.engines import create_engine  # noqa: E402
from voxpipe.stages.engines.base import EngineError, EngineSettings, LoadedVoice  # noqa: E402
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.engines.torch_engine import TorchEngine, system_memory  # noqa: E402
from voxpipe.stages.families.piper.vits.load import load_piper_onnx, read_onnx_weights, unused_weights  # noqa: E402
from voxpipe.stages.families.piper.vits.export import export_piper  # noqa: E402
from voxpipe.stages.families.piper.vits.model import bucket_length  # noqa: E402
from voxpipe.stages.families.piper.vits.random_voice import random_model, tiny_config, write_random_piper_voice  # noqa: E402
from voxpipe.stages.families.piper.phonemize import Phonemizer  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR as BENCH  # noqa: E402  (the bench texts, in the package)
FULL = os.environ.get("VOXPIPE_FULL_TESTS") == "1"
TOLERANCE = 1e-3


def bench_texts() -> list[str]:
    texts: list[str] = []
    tsv, longform = BENCH / "texts_en.tsv", BENCH / "longform_en.txt"
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                texts.append(line.split("\t", 1)[-1].strip())
    if longform.is_file():
        for paragraph in longform.read_text(encoding="utf-8").split("\n"):
            texts.extend(s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s)
    return texts


def selected_texts() -> list[str]:
    texts = bench_texts()
    if FULL or not texts:
        return texts
    by_len = sorted(texts, key=len)
    # Shortest, middle and longest cover the length range cheaply.
    return list(dict.fromkeys([by_len[0], by_len[len(by_len) // 2], by_len[-1]]))


def ort_session(path: Path, threads: int = 2):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_audio(session, ids: np.ndarray, scales=(0.0, 1.0, 0.0), sid: int | None = None) -> np.ndarray:
    feeds = {"input": ids[None].astype(np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
             "scales": np.array(scales, dtype=np.float32)}
    if sid is not None:
        feeds["sid"] = np.array([sid], dtype=np.int64)
    return session.run(None, feeds)[0].reshape(-1)


def torch_audio(model, ids: np.ndarray, scales=(0.0, 1.0, 0.0), sid: int | None = None) -> np.ndarray:
    with torch.inference_mode():
        z, frames = model.acoustic(torch.from_numpy(ids.astype(np.int64))[None], torch.tensor([len(ids)]),
                                   *scales, sid=None if sid is None else torch.tensor([sid]))
        return model.vocode(z, frames, sid=None if sid is None else torch.tensor([sid]))[0].numpy()


@pytest.fixture(scope="module")
def joe():
    torch.set_num_threads(2)
    spec = VoiceCatalog(None).get("joe")
    return spec, load_piper_onnx(spec.model_path, spec.name), ort_session(spec.model_path), Phonemizer(spec)


@pytest.fixture(scope="module")
def random_voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("voices")
    write_random_piper_voice(root, "tiny", seed=3)
    write_random_piper_voice(root, "tiny-multi", seed=4, num_speakers=3, sample_rate=22050)
    return root


# --------------------------------------------------------------------------- the bundled voice


def test_hyperparameters_come_from_the_weights(joe):
    spec, model, _, _ = joe
    cfg = model.cfg
    assert (cfg.n_vocab, cfg.hidden_channels, cfg.inter_channels, cfg.filter_channels) == (256, 192, 192, 768)
    assert (cfg.n_heads, cfg.n_layers, cfg.window_size, cfg.kernel_size) == (2, 6, 4, 3)
    assert cfg.upsample_rates == (8, 8, 4) and cfg.resblock == "2" and cfg.hop_length == 256
    assert cfg.resblock_dilation_sizes == ((1, 2), (2, 6), (3, 12))
    assert (cfg.flow_n_flows, cfg.flow_n_layers, cfg.dp_n_flows, cfg.n_speakers) == (4, 4, 4, 1)
    assert unused_weights(read_onnx_weights(spec.model_path), model) == []


@pytest.mark.reference
@pytest.mark.parametrize("text", selected_texts() or ["Hello there."])
def test_matches_onnxruntime_without_noise(joe, text):
    _, model, session, phonemizer = joe
    ids = phonemizer.text_to_ids(text)
    ref, ours = ort_audio(session, ids), torch_audio(model, ids)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.reference
def test_length_scale_rounds_durations_like_onnxruntime(joe):
    _, model, session, phonemizer = joe
    ids = phonemizer.text_to_ids("Good morning, everyone.")
    for length_scale in (0.7, 1.37):
        scales = (0.0, length_scale, 0.0)
        ref, ours = ort_audio(session, ids, scales), torch_audio(model, ids, scales)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() <= TOLERANCE


def test_batch_equals_items_alone(joe):
    _, model, _, phonemizer = joe
    rows = [phonemizer.text_to_ids(t) for t in ("Thank you.", "Our train leaves the station at half past seven.",
                                                "Good morning.")]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.from_numpy(row)
    with torch.inference_mode():
        z, frames = model.acoustic(ids, torch.tensor([len(r) for r in rows]), 0.0, 1.0, 0.0)
        batch = model.vocode(z, frames)
    for i, row in enumerate(rows):
        alone = torch_audio(model, row)
        assert int(frames[i]) * model.hop_length == alone.shape[0]
        assert np.abs(batch[i, :alone.shape[0]].numpy() - alone).max() <= 1e-4


# --------------------------------------------------------------------------- random voices


@pytest.mark.parametrize("name,sid", [("tiny", None), ("tiny-multi", 2)])
def test_random_voice_loads_in_onnxruntime_and_torch(random_voices, name, sid):
    onnx_path = random_voices / name / f"{name}.onnx"
    assert onnx_path.stat().st_size < 2 * 1024 * 1024
    config = json.loads((random_voices / name / f"{name}.onnx.json").read_text(encoding="utf-8"))
    assert config["espeak"]["voice"] == "en-us" and config["phoneme_type"] == "espeak"
    assert config["num_speakers"] == (3 if sid is not None else 1)
    spec = VoiceCatalog(random_voices).get(name)
    session = ort_session(onnx_path)
    assert [i.name for i in session.get_inputs()] == ["input", "input_lengths", "scales"] + (["sid"] if sid else [])
    model = load_piper_onnx(onnx_path, name, spec.settings.num_speakers)
    assert model.cfg == tiny_config(3 if sid is not None else 1)
    ids = Phonemizer(spec).text_to_ids("A tiny random voice, for tests.")
    ref, ours = ort_audio(session, ids, sid=sid), torch_audio(model, ids, sid=sid)
    assert session.run(None, {"input": ids[None], "input_lengths": np.array([len(ids)]),
                              "scales": np.array([0.0, 1.0, 0.0], np.float32),
                              **({"sid": np.array([sid])} if sid else {})})[0].ndim == 4
    assert ours.shape == ref.shape and ref.size % model.hop_length == 0
    assert np.abs(ours - ref).max() <= 1e-4


def test_reweighted_voice_is_byte_for_byte_a_fresh_export(random_voices, tmp_path):
    # Later random voices of one structure reuse the first export with new weights.
    reused = write_random_piper_voice(tmp_path, "again", seed=5).read_bytes()
    path = export_piper(random_model(tiny_config(), seed=5), tmp_path / "fresh.onnx")
    assert reused == path.read_bytes()


@pytest.mark.parametrize("changes", [
    # 'high'-quality layout: ResBlock1 and four upsampling stages
    dict(resblock="1", resblock_kernel_sizes=(3, 7, 11), resblock_dilation_sizes=((1, 3, 5),) * 3,
         upsample_rates=(8, 4, 2, 2), upsample_kernel_sizes=(16, 8, 4, 4)),
    # plain duration predictor, dilated flow, four heads, two speakers
    dict(use_sdp=False, dp_filter_channels=24, flow_dilation_rate=2, n_heads=4, n_layers=3, window_size=3,
         n_speakers=2, gin_channels=8),
], ids=["high-layout", "no-sdp"])
def test_other_architectures_round_trip(tmp_path, changes):
    cfg = dataclasses.replace(tiny_config(), **changes)
    model = random_model(cfg, seed=7)
    path = export_piper(model, tmp_path / "v.onnx")
    loaded = load_piper_onnx(path, "v")
    assert loaded.cfg == cfg
    ids = np.arange(1, 40, dtype=np.int64)
    sid = 1 if cfg.n_speakers > 1 else None
    ref, ours = ort_audio(ort_session(path), ids, sid=sid), torch_audio(loaded, ids, sid=sid)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-4


def test_unscoped_graph_loads_the_same(joe, tmp_path):
    # Older exporters name nodes "Conv_12" instead of "/flow/flows.6/enc/in_layers.0/Conv".
    spec, model, _, _ = joe
    proto = onnx.load(str(spec.model_path))
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type}_{i}"
    onnx.save(proto, str(tmp_path / "old.onnx"))
    old = load_piper_onnx(tmp_path / "old.onnx", "old")
    assert old.cfg == model.cfg
    ours, theirs = model.state_dict(), old.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_speakers_differ(random_voices):
    model = load_piper_onnx(random_voices / "tiny-multi" / "tiny-multi.onnx", "tiny-multi")
    ids = np.arange(1, 30, dtype=np.int64)
    first, second = torch_audio(model, ids, sid=0), torch_audio(model, ids, sid=1)
    assert first.shape != second.shape or not np.allclose(first, second)


# --------------------------------------------------------------------------- loader errors


def test_missing_and_corrupt_files_name_the_voice(tmp_path):
    with pytest.raises(EngineError, match="'ghost'"):
        load_piper_onnx(tmp_path / "nope.onnx", "ghost")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(EngineError, match="'broken'"):
        load_piper_onnx(bad, "broken")


def test_shape_mismatch_names_the_voice(random_voices, tmp_path):
    proto = onnx.load(str(random_voices / "tiny" / "tiny.onnx"))
    for tensor in proto.graph.initializer:
        if tensor.name == "enc_p.encoder.attn_layers.1.emb_rel_k":
            array = onnx.numpy_helper.to_array(tensor)[:, :7]  # window 3 where layer 0 says 4
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(array), tensor.name))
    path = tmp_path / "odd.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(EngineError, match="'odd'.*emb_rel_k"):
        load_piper_onnx(path, "odd")


def test_not_a_vits_graph(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(EngineError, match="'identity-voice'"):
        load_piper_onnx(path, "identity-voice")


# --------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def engine_and_voice(random_voices):
    engine = create_engine("torch", EngineSettings(device="cpu", threads=2))
    spec = VoiceCatalog(random_voices).get("tiny-multi")
    return engine, engine.load_voice(spec)


def test_engine_batches_and_trims(engine_and_voice):
    engine, voice = engine_and_voice
    assert isinstance(engine, TorchEngine) and engine.name == "torch"
    assert voice.nbytes > 0
    items = [SynthesisItem(np.arange(1, n, dtype=np.int64), 0.667, 1.0, 0.8, speaker_id=n % 3, seed=n)
             for n in (5, 40, 17)]
    out = engine.synthesize(voice, items)
    hop = voice.model.hop_length
    assert [a.dtype for a in out] == [np.float32] * 3
    assert all(a.ndim == 1 and a.size % hop == 0 and a.size > 0 for a in out)
    alone = [engine.synthesize(voice, [item])[0] for item in items]
    for a, b in zip(out, alone):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4
    assert engine.synthesize(voice, []) == []


def test_shape_buckets_do_not_change_audio(random_voices):
    spec = VoiceCatalog(random_voices).get("tiny")
    plain = TorchEngine(EngineSettings(threads=2, options={"shape_buckets": 0}))
    bucketed = TorchEngine(EngineSettings(threads=2))
    items = [SynthesisItem(np.arange(1, n, dtype=np.int64), 0.667, 1.1, 0.8, seed=n) for n in (13, 37)]
    for a, b in zip(plain.synthesize(plain.load_voice(spec), items),
                    bucketed.synthesize(bucketed.load_voice(spec), items)):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4
    for n in (1, 17, 100, 300, 547, 5000):
        assert n <= bucket_length(n) <= max(16, n + 8, int(n * 1.125) + 1)


def test_engine_stream_joins_to_the_whole(engine_and_voice):
    engine, voice = engine_and_voice
    item = SynthesisItem(np.arange(1, 60, dtype=np.int64), 0.667, 1.0, 0.8, speaker_id=1, seed=5)
    whole = engine.synthesize(voice, [item])[0]
    pieces = list(engine.synthesize_stream(voice, item, window_frames=8))
    assert len(pieces) > 2 and pieces[0].size == 8 * voice.model.hop_length
    assert np.abs(np.concatenate(pieces) - whole).max() <= 1e-4
    assert not torch.is_inference_mode_enabled()


def test_engine_rejects_bad_input(engine_and_voice):
    engine, voice = engine_and_voice
    bad = [SynthesisItem(np.array([], dtype=np.int64), 0.667, 1.0, 0.8),
           SynthesisItem(np.array([1, 999], dtype=np.int64), 0.667, 1.0, 0.8),
           SynthesisItem(np.array([1, 2], dtype=np.int64), 0.667, 1.0, 0.8, speaker_id=7)]
    for item in bad:
        with pytest.raises(EngineError, match="tiny-multi"):
            engine.synthesize(voice, [item])
    with pytest.raises(EngineError):
        TorchEngine(EngineSettings(precision="int8"))


def test_engine_lets_out_of_memory_through(engine_and_voice, monkeypatch):
    # The worker tells out-of-memory apart from other failures: it halves the batch.
    engine, voice = engine_and_voice
    item = SynthesisItem(np.arange(1, 9, dtype=np.int64), 0.667, 1.0, 0.8)

    def boom(message):
        def acoustic(*args, **kwargs):
            raise RuntimeError(message)
        return acoustic

    monkeypatch.setattr(voice.model, "acoustic_timed", boom("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(RuntimeError, match="out of memory") as info:
        engine.synthesize(voice, [item])
    assert not isinstance(info.value, EngineError)
    monkeypatch.setattr(voice.model, "acoustic_timed", boom("something else broke"))
    with pytest.raises(EngineError, match="tiny-multi.*something else"):
        engine.synthesize(voice, [item])


def test_engine_unload_and_memory(engine_and_voice, tmp_path):
    engine, _ = engine_and_voice
    info = engine.memory_info()
    assert 0 < info["free"] <= info["total"]
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable: 40 kB\n")
    assert system_memory(tmp_path / "meminfo") == {"free": 40 * 1024, "total": 100 * 1024}
    assert system_memory(tmp_path / "missing") == {}
    voice = LoadedVoice(spec=engine_and_voice[1].spec, model=object(), nbytes=1)
    engine.unload_voice(voice)
    assert voice.model is None
    with pytest.raises(EngineError, match="not loaded"):
        engine.synthesize(voice, [SynthesisItem(np.array([1, 2]), 0.667, 1.0, 0.8)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_on_gpu(random_voices, precision):
    spec = VoiceCatalog(random_voices).get("tiny")
    gpu = TorchEngine(EngineSettings(device="cuda", precision=precision))
    cpu = TorchEngine(EngineSettings(device="cpu", threads=2))
    item = SynthesisItem(np.arange(1, 50, dtype=np.int64), 0.667, 1.0, 0.8, seed=3)
    on_gpu = gpu.synthesize(gpu.load_voice(spec), [item])[0]
    on_cpu = cpu.synthesize(cpu.load_voice(spec), [item])[0]
    assert on_gpu.shape == on_cpu.shape and on_gpu.dtype == np.float32
    peak = np.abs(on_cpu).max()
    assert np.abs(on_gpu - on_cpu).max() <= (1e-3 if precision == "fp32" else 0.05 * peak + 1e-3)
    info = gpu.memory_info()
    assert 0 < info["free"] <= info["total"]


# --------------------------------------------------------------------------- speed (opt-in)


@pytest.mark.skipif(os.environ.get("VOXPIPE_BENCH") != "1", reason="set VOXPIPE_BENCH=1")
@pytest.mark.parametrize("threads", [1, 2])
def test_real_time_factor(threads):
    """Every bench text once (fresh shapes, as in serving), onnxruntime and torch engine
    interleaved text by text; prints wall-clock and CPU-time real-time factors."""
    spec = VoiceCatalog(None).get("joe")
    phonemizer = Phonemizer(spec)
    rows = [phonemizer.text_to_ids(t) for t in bench_texts()]
    session = ort_session(spec.model_path, threads)
    engine = TorchEngine(EngineSettings(threads=threads))
    voice = engine.load_voice(spec)
    totals = {"ort": [0.0, 0.0], "torch": [0.0, 0.0]}
    made = {"ort": 0.0, "torch": 0.0}  # audio seconds each engine made
    engine.synthesize(voice, [SynthesisItem(rows[0], 0.667, 1.0, 0.8)])
    ort_audio(session, rows[0])
    for ids in rows:
        for name in ("ort", "torch"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "ort":
                audio = ort_audio(session, ids, (0.667, 1.0, 0.8))
            else:
                audio = engine.synthesize(voice, [SynthesisItem(ids, 0.667, 1.0, 0.8)])[0]
            totals[name][0] += time.perf_counter() - wall
            totals[name][1] += time.process_time() - cpu
            assert audio.size > 0 and np.isfinite(audio).all() and np.abs(audio).max() > 0.01, (name, len(ids))
            made[name] += audio.size / spec.sample_rate
    seconds = (made["ort"] + made["torch"]) / 2
    print(f"\nthreads={threads} texts={len(rows)} audio={seconds:.1f}s "
          f"(ort {made['ort']:.1f}, torch {made['torch']:.1f})  "
          + "  ".join(f"{k}: RTF wall {v[0] / seconds:.4f} cpu {v[1] / seconds:.4f}" for k, v in totals.items()))
    # The factors compare like with like: both engines spoke every text, at the same length
    # overall (each text's length varies with the duration noise; over all texts it evens out).
    assert made["torch"] == pytest.approx(made["ort"], rel=0.02), made
