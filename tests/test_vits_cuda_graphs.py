"""CUDA graphs for the vocoder: bucket choice, padding and trimming, the LRU of graphs.

On a CPU the capture step is `eager_capture`, which keeps a graph's buffer semantics
(static inputs read at replay, one output buffer overwritten by the next replay), so the
padding and cache logic is checked here; the real capture is checked where CUDA is.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxpipe.stages.engines.base import EngineSettings  # noqa: E402

from voxpipe.stages.families.piper.item import SynthesisItem
from voxpipe.stages.families.piper.engines.torch_engine import TorchEngine  # noqa: E402
from voxpipe.stages.families.piper.vits.cuda_graphs import (  # noqa: E402
    GraphedVocoder, batch_buckets, eager_capture, fill_static, frame_bucket, masked_vocoder,
    new_static_inputs, pick_bucket)
from voxpipe.stages.families.piper.vits.random_voice import random_model, tiny_config  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402

CUDA = torch.cuda.is_available()


def small_config(num_speakers: int = 3):
    """The tiny test voice with a smaller generator (hop 16): the logic under test is the
    same and each new padded shape costs the CPU far less."""
    return dataclasses.replace(tiny_config(num_speakers), upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
                               resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 2), (2, 6)))


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return random_model(small_config(), seed=7)


def latents(model, frames: list[int], width: int | None = None, seed: int = 0):
    """A batch like the acoustic part makes: zero past each item's length."""
    gen = torch.Generator().manual_seed(seed)
    width = width or max(frames)
    z = torch.randn(len(frames), model.cfg.inter_channels, width, generator=gen)
    for i, n in enumerate(frames):
        z[i, :, n:] = 0
    sid = torch.arange(len(frames)) % model.cfg.n_speakers
    return z, torch.tensor(frames), sid


def test_buckets():
    assert batch_buckets(16) == (1, 2, 4, 8, 16)
    assert batch_buckets(12) == (1, 2, 4, 8, 12)
    assert batch_buckets(1) == (1,)
    assert [pick_bucket(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, None]
    for n in range(1, 700):
        f = frame_bucket(n, 4, 600)
        if n > 600:
            assert f is None
        else:
            assert f is not None and n <= f <= 600 and f <= max(16, int(n * 1.25) + 8)
    assert len({frame_bucket(n, 4, 600) for n in range(1, 601)}) < 40  # shapes do repeat


def test_fill_static_pads_with_zeros_and_clears_stale_values():
    static = new_static_inputs(4, 3, 10, speakers=True)
    static.z.fill_(float("nan"))
    static.lengths.fill_(99)
    static.sid.fill_(5)
    z = torch.ones(2, 3, 6)
    fill_static(static, z, torch.tensor([6, 4]), torch.tensor([1, 2]))
    assert torch.equal(static.z[:2, :, :6], z)
    assert static.z[:, :, 6:].abs().sum() == 0 and static.z[2:].abs().sum() == 0
    assert static.lengths.tolist() == [6, 4, 0, 0]
    assert static.sid.tolist() == [1, 2, 0, 0]
    with pytest.raises(ValueError):
        fill_static(static, torch.ones(5, 3, 6), torch.ones(5, dtype=torch.long), None)


def test_padded_and_trimmed_output_equals_the_unpadded(model):
    graphed = GraphedVocoder(model, max_batch=8, max_frames=64, steps_per_octave=2, capture=eager_capture)
    z, frames, sid = latents(model, [21, 13, 7])
    assert graphed.shape_for(3, 21) == (4, 24)  # padded in batch and in frames
    with torch.inference_mode():
        out = graphed(z, frames, sid)
        eager = model.vocode(z, frames, sid=sid)
    hop = model.hop_length
    assert out.shape == eager.shape == (3, 21 * hop)
    assert graphed.replays == 1 and graphed.eager_calls == 0
    for i, n in enumerate(frames.tolist()):
        assert (out[i, :n * hop] - eager[i, :n * hop]).abs().max() <= 1e-5
        with torch.inference_mode():
            alone = model.vocode(z[i:i + 1, :, :n], sid=sid[i:i + 1])[0]
        assert (out[i, :n * hop] - alone).abs().max() <= 1e-5
    assert masked_vocoder(model)(z, frames, sid).shape == out.shape


def test_each_result_survives_the_next_replay(model):
    graphed = GraphedVocoder(model, max_batch=4, max_frames=64, capture=eager_capture)
    z1, f1, s1 = latents(model, [20, 18], seed=1)
    z2, f2, s2 = latents(model, [20, 11], seed=2)
    with torch.inference_mode():
        first = graphed(z1, f1, s1)
        kept = first.clone()
        second = graphed(z2, f2, s2)
    assert graphed.captures == 1 and graphed.replays == 2  # same shape: one graph
    assert torch.equal(first, kept)
    assert not torch.allclose(first, second)


def test_least_recently_used_graphs_go_first(model):
    graphed = GraphedVocoder(model, max_batch=8, max_frames=256, steps_per_octave=1, max_graphs=2,
                             capture=eager_capture)
    shapes = {"a": [20], "b": [20, 20], "c": [40]}
    keys = {name: graphed.shape_for(len(f), max(f)) for name, f in shapes.items()}
    assert len(set(keys.values())) == 3
    with torch.inference_mode():
        for name in ["a", "b", "a", "c"]:
            graphed(*latents(model, shapes[name]))
        assert graphed.cached_shapes() == [keys["a"], keys["c"]]
        assert (graphed.captures, graphed.evictions) == (3, 1)
        graphed(*latents(model, shapes["b"]))  # evicted: captured again
    assert graphed.captures == 4 and graphed.cached_shapes() == [keys["c"], keys["b"]]


def test_past_the_largest_bucket_runs_eagerly(model):
    graphed = GraphedVocoder(model, max_batch=2, max_frames=32, capture=eager_capture)
    with torch.inference_mode():
        for frames in ([40], [10, 10, 10]):
            z, f, s = latents(model, frames)
            out = graphed(z, f, s)
            assert (out - model.vocode(z, f, sid=s)).abs().max() <= 1e-6
    assert graphed.eager_calls == 2 and graphed.captures == 0


def test_failed_capture_falls_back_and_out_of_memory_passes_through(model):
    calls = []

    def broken(fn, static):
        calls.append(static.z.shape)
        raise RuntimeError("operation not permitted when stream is capturing")

    graphed = GraphedVocoder(model, max_batch=2, max_frames=64, capture=broken)
    z, f, s = latents(model, [20])
    with torch.inference_mode():
        expected = model.vocode(z, f, sid=s)
        assert torch.allclose(graphed(z, f, s), expected)
        assert torch.allclose(graphed(z, f, s), expected)
    assert len(calls) == 1 and graphed.eager_calls == 2  # not retried for that shape

    def out_of_memory(fn, static):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    graphed = GraphedVocoder(model, max_batch=2, max_frames=64, capture=out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"), torch.inference_mode():
        graphed(z, f, s)


@pytest.mark.slow
def test_engine_uses_graphs_only_where_asked_and_audio_is_unchanged(model):
    spec = VoiceCatalog(None).get("joe")  # any spec: only its name is read
    assert not TorchEngine(EngineSettings(device="cpu", options={"cuda_graphs": True})).cuda_graphs
    plain = TorchEngine(EngineSettings(device="cpu", threads=2, options={"max_batch": 4}))
    graphed = TorchEngine(EngineSettings(device="cpu", threads=2, options={"max_batch": 4}))
    graphed.cuda_graphs, graphed.graph_capture = True, eager_capture  # the CPU stand-in
    items = [SynthesisItem(np.arange(1, n, dtype=np.int64), 0.667, 1.0, 0.8, speaker_id=n % 3, seed=n)
             for n in (9, 30, 17)]
    voice = graphed._place(spec, model)
    for a, b in zip(plain.synthesize(plain._place(spec, model), items), graphed.synthesize(voice, items)):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    vocoder = graphed._graphed[id(voice.model)]
    assert vocoder.replays == 1 and vocoder.captures == 1
    graphed.unload_voice(voice)
    assert not graphed._graphed


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_graph_replay_equals_eager_on_gpu(model):
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # exact fp32 on both paths
    try:
        gpu = random_model(tiny_config(num_speakers=3), seed=7).cuda()  # the full-size generator
        graphed = GraphedVocoder(gpu, max_batch=4, max_frames=128)
        eager = masked_vocoder(gpu)
        hop = gpu.hop_length
        for frames in ([37], [50, 41, 12], [64, 64]):
            z, f, s = (t.cuda() for t in latents(gpu, frames, seed=len(frames)))
            b, width = graphed.shape_for(len(frames), max(frames))
            padded = new_static_inputs(b, z.shape[1], width, speakers=True, device="cuda")
            fill_static(padded, z, f, s)
            with torch.inference_mode():
                out = graphed(z, f, s)
                same_shape = eager(padded.z, padded.lengths, padded.sid)[:len(frames), :max(frames) * hop]
                unpadded = gpu.vocode(z, f, sid=s)
            assert (out - same_shape).abs().max().item() <= 1e-5
            assert (out - unpadded).abs().max().item() <= 1e-4
        assert graphed.captures == 3 and graphed.eager_calls == 0
        with torch.inference_mode():
            again = graphed(z, f, s)  # a replay of an existing graph
        assert graphed.captures == 3 and (again - out).abs().max().item() <= 1e-6
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
