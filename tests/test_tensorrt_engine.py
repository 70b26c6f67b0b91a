"""The TensorRT engine: plan cache, optimization profiles and errors on the CPU; the plan
itself against torch where there is a GPU with tensorrt and pycuda."""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import sys
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxpipe.stages.families.piper.engines import create_engine  # noqa: E402
from voxpipe.stages.engines.base import EngineError, EngineSettings  # noqa: E402
from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.engines.tensorrt_build import BuildError, build_in_subprocess  # noqa: E402
from voxpipe.stages.families.piper.engines.tensorrt_plan import (  # noqa: E402
    PlanKey, ProfileSpec, build_lock, choose_profile, default_plan_dir, frame_edges, profile_shape,
    profile_specs, read_plan, specs_from_json, specs_to_json, write_plan)
from voxpipe.stages.families.piper.engines.tensorrt_runtime import grown_capacity  # noqa: E402

HAVE_TRT = all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))
GPU_AND_TRT = pytest.mark.skipif(not (HAVE_TRT and torch.cuda.is_available()),
                                 reason="needs an NVIDIA GPU with tensorrt and pycuda installed")


# --------------------------------------------------------------------------- profiles


def test_frame_edges():
    assert frame_edges(2048) == [16, 32, 64, 128, 256, 512, 1024, 2048]
    assert frame_edges(1000) == [16, 32, 64, 128, 256, 512, 1000]
    assert frame_edges(1000, growth=4) == [16, 64, 256, 1000]
    assert frame_edges(10) == [10]
    with pytest.raises(ValueError):
        frame_edges(100, growth=1)


@pytest.mark.parametrize("max_batch,max_frames,buckets,growth",
                         [(16, 2048, (), 2), (8, 1000, (1, 4), 2), (1, 300, (), 4), (12, 64, (2, 8, 99), 2)])
def test_profiles_are_ordered_contiguous_and_cover_the_range(max_batch, max_frames, buckets, growth):
    specs = profile_specs(max_batch, max_frames, batch_buckets=buckets, growth=growth)
    for spec in specs:
        assert spec.batch[0] <= spec.batch[1] <= spec.batch[2]
        assert spec.frames[0] <= spec.frames[1] <= spec.frames[2]
    # Along each axis the ranges tile 1..max without gaps or overlaps.
    for axis, top in (("batch", max_batch), ("frames", max_frames)):
        ranges = sorted({getattr(s, axis)[::2] for s in specs})
        assert ranges[0][0] == 1 and ranges[-1][1] == top
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    # Every shape in range has exactly one profile, and the chosen one covers it.
    frames = sorted({1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 299, 300, max_frames - 1, max_frames} - {0})
    for b, f in itertools.product(range(1, max_batch + 1), [f for f in frames if f <= max_frames]):
        covering = [i for i, s in enumerate(specs) if s.covers(b, f)]
        assert len(covering) == 1 and choose_profile(specs, b, f) == covering[0]
    assert choose_profile(specs, max_batch + 1, 16) is None
    assert choose_profile(specs, 1, max_frames + 1) is None


def test_choose_profile_prefers_the_narrowest():
    wide = ProfileSpec(batch=(1, 16, 16), frames=(1, 1024, 2048))
    narrow = ProfileSpec(batch=(1, 4, 4), frames=(1, 48, 64))
    assert choose_profile([wide, narrow], 2, 50) == 1
    assert choose_profile([wide, narrow], 8, 50) == 0


def test_profile_shapes_and_json():
    spec = ProfileSpec(batch=(1, 8, 8), frames=(33, 48, 64))
    assert [profile_shape((-1, 192, -1), spec, w) for w in range(3)] == [(1, 192, 33), (8, 192, 48), (8, 192, 64)]
    assert [profile_shape((-1,), spec, w) for w in range(3)] == [(1,), (8,), (8,)]
    with pytest.raises(ValueError):
        profile_shape((-1, -1, 20), spec, 0)
    specs = profile_specs(16, 500, batch_buckets=(2,))
    assert specs_from_json(specs_to_json(specs)) == specs


# --------------------------------------------------------------------------- plan cache


def key() -> PlanKey:
    return PlanKey(gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), tensorrt_version="10.3.0",
                   voice_sha256="ab" * 32, precision="fp16", profiles=tuple(profile_specs(16, 2048)))


def test_plan_key_changes_with_each_input():
    base = key()
    assert base.digest() == key().digest()  # stable across processes: no hash() randomisation
    changes = {"gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0), "tensorrt_version": "10.4.0",
               "voice_sha256": "cd" * 32, "precision": "fp32", "profiles": tuple(profile_specs(16, 1024))}
    assert set(changes) == {f.name for f in dataclasses.fields(PlanKey)}
    digests = {base.digest()} | {dataclasses.replace(base, **{k: v}).digest() for k, v in changes.items()}
    assert len(digests) == len(changes) + 1
    name = base.file_name("en_US/../lessac medium")
    assert name.endswith(".plan") and "/" not in name and " " not in name
    assert base.digest()[:32] in name


def test_plan_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("VOXPIPE_TRT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_plan_dir() == tmp_path / "voxpipe" / "tensorrt"
    monkeypatch.setenv("VOXPIPE_TRT_CACHE_DIR", str(tmp_path / "plans"))
    assert default_plan_dir() == tmp_path / "plans"


def test_plan_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "voice.plan"
    assert read_plan(path) is None
    write_plan(path, b"first plan")
    assert read_plan(path) == b"first plan"
    write_plan(path, b"second")
    assert read_plan(path) == b"second"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_plan(path, b"third, never complete")
    assert read_plan(path) == b"second"  # the old plan, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["voice.plan"]  # no temporary left
    path.write_bytes(b"")
    assert read_plan(path) is None  # an empty file is no plan


def test_build_lock_serialises_builders(tmp_path):
    path = tmp_path / "voice.plan"
    events: list[str] = []

    def second() -> None:
        with build_lock(path):
            events.append("second")

    with build_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        events.append("first done")
    thread.join(5)
    assert events == ["first done", "second"]


def test_buffers_grow_geometrically():
    assert grown_capacity(0, 10) == 1 << 16
    assert grown_capacity(1 << 16, 100) == 1 << 16
    assert grown_capacity(1 << 16, (1 << 16) + 1) == 1 << 17
    assert grown_capacity(1 << 16, 1 << 20) == 1 << 20


# --------------------------------------------------------------------------- errors


def test_no_gpu_is_a_clear_engine_error():
    for device in ("cpu", "cuda"):
        if device == "cuda" and torch.cuda.is_available():
            continue
        with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
            create_engine("tensorrt", EngineSettings(device=device))


def test_missing_packages_are_a_clear_engine_error(monkeypatch):
    from voxpipe.stages.families.piper.engines.tensorrt_engine import TensorRTEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    with pytest.raises(EngineError, match=r"tensorrt and pycuda.*voxpipe\[gpu\]"):
        TensorRTEngine(EngineSettings(device="cuda"))


@pytest.mark.skipif(HAVE_TRT, reason="checks the failure path without tensorrt")
def test_failed_build_reports_the_childs_error(tmp_path):
    (tmp_path / "vocoder.onnx").write_bytes(b"")
    with pytest.raises(BuildError, match="tensorrt"):
        build_in_subprocess(tmp_path / "vocoder.onnx", tmp_path / "v.plan", profile_specs(2, 64), "fp32", 64, 60)
    assert not (tmp_path / "v.plan").exists()


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def gpu_voice(tmp_path_factory):
    from voxpipe.stages.families.piper.vits.random_voice import write_random_piper_voice
    from voxpipe.stages.voices import VoiceCatalog

    root = tmp_path_factory.mktemp("trt-voices")
    write_random_piper_voice(root, "tiny-trt", seed=11, num_speakers=2)
    return VoiceCatalog(root).get("tiny-trt"), root


@pytest.mark.gpu
@pytest.mark.slow
@GPU_AND_TRT
def test_tensorrt_vocoder_matches_torch_and_reuses_its_plan(gpu_voice, tmp_path, monkeypatch):
    from voxpipe.stages.families.piper.engines.tensorrt_engine import TensorRTEngine
    from voxpipe.stages.families.piper.engines.torch_engine import TorchEngine

    spec, _ = gpu_voice
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # exact fp32 for the reference
    options = {"plan_dir": str(tmp_path / "plans"), "max_batch": 4, "trt_max_frames": 256}
    engine = TensorRTEngine(EngineSettings(device="cuda", options=options))
    voice = engine.load_voice(spec)
    plans = list((tmp_path / "plans").glob("*.plan"))
    assert len(plans) == 1 and plans[0] == engine.plan_path(spec)
    model = voice.model
    runner = engine._runners[id(model)]
    gen = torch.Generator().manual_seed(0)
    for widths in ([20], [100, 37, 64], [256, 200]):  # several profiles, batch sizes and a full one
        z = torch.randn(len(widths), model.cfg.inter_channels, max(widths), generator=gen).cuda()
        frames = torch.tensor(widths).cuda()
        sid = (torch.arange(len(widths)) % 2).cuda()
        with torch.inference_mode():
            expected = model.vocode(z, frames, sid=sid).float().cpu().numpy()
        got = runner.run(z, frames, sid)
        assert got.shape == expected.shape
        for i, n in enumerate(widths):
            hop = model.hop_length
            assert np.abs(got[i, :n * hop] - expected[i, :n * hop]).max() <= 1e-3

    torch_engine = TorchEngine(EngineSettings(device="cuda", options={"cuda_graphs": False}))
    items = [SynthesisItem(np.arange(1, n, dtype=np.int64), 0.667, 1.0, 0.8, speaker_id=n % 2, seed=n)
             for n in (9, 40)]
    for a, b in zip(engine.synthesize(voice, items), torch_engine.synthesize(torch_engine.load_voice(spec), items)):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-3

    # A second load (a restarted worker) takes the cached plan without building.
    mtime = plans[0].stat().st_mtime_ns
    again = TensorRTEngine(EngineSettings(device="cuda", options=options))
    monkeypatch.setattr(again, "_build", lambda *a: pytest.fail("built again instead of reusing the plan"))
    second = again.load_voice(spec)
    assert plans[0].stat().st_mtime_ns == mtime
    assert np.abs(again.synthesize(second, items)[0] - engine.synthesize(voice, items)[0]).max() <= 1e-3
    again.unload_voice(second)
    engine.unload_voice(voice)
