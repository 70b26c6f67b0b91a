"""Streaming vocoder and ONNX export of the PyTorch VITS."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = [pytest.mark.slow]  # graph exports and decodes

from voxpipe.stages.families.piper import noise  # noqa: E402
from voxpipe.stages.families.piper.vits.export import (export_flow, export_prior,  # noqa: E402
                                                     export_single_vocoder, export_vocoder)
from voxpipe.stages.families.piper.vits.load import load_piper_onnx  # noqa: E402
from voxpipe.stages.families.piper.vits.random_voice import random_model, tiny_config  # noqa: E402
from voxpipe.stages.engines.receptive_field import receptive_radius  # noqa: E402
from voxpipe.stages.families.piper.engines.windows import stream_windows  # noqa: E402
from voxpipe.stages.families.piper.vits.stream import decode_windows  # noqa: E402
from voxpipe.stages.voices import VoiceCatalog  # noqa: E402


@pytest.fixture(scope="module")
def joe_model():
    torch.set_num_threads(2)
    spec = VoiceCatalog(None).get("joe")
    return load_piper_onnx(spec.model_path, spec.name)


def test_receptive_radius_covers_the_measured_one(joe_model):
    frames, probe = 64, 32
    z = torch.randn(1, joe_model.cfg.inter_channels, frames, generator=torch.Generator().manual_seed(1))
    bumped = z.clone()
    bumped[:, :, probe] += 1.0
    with torch.inference_mode():
        changed = torch.nonzero(joe_model.vocode(bumped)[0] != joe_model.vocode(z)[0]).flatten()
    hop = joe_model.hop_length
    reach = max(probe - int(changed.min()) // hop, int(changed.max()) // hop - probe)
    radius = receptive_radius(joe_model.dec)
    assert 0 < reach <= radius <= reach + 4  # safe, and not wastefully wide


@pytest.mark.parametrize("window", [5, 32, 500])
def test_windows_join_to_the_full_decode(joe_model, window):
    z = torch.randn(1, joe_model.cfg.inter_channels, 80, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = joe_model.vocode(z)[0]
        pieces = list(decode_windows(joe_model, z, window))
        equal = list(decode_windows(joe_model, z, window, growth=1))
    hop = joe_model.hop_length
    first_window = stream_windows(80, window)[0]
    assert pieces[0].shape[0] == (first_window[1] - first_window[0]) * hop  # first audio after one window
    assert len(equal) == len(stream_windows(80, window, growth=1))
    assert len(pieces) <= len(equal)  # later windows grow
    assert (torch.cat(equal) - torch.cat(pieces)).abs().max().item() <= 1e-3
    joined = torch.cat(pieces)
    assert joined.shape == full.shape
    assert (joined - full).abs().max().item() <= 1e-3


def test_too_little_context_is_visible(joe_model):
    # Guards the test above: without enough context the seams do differ.
    z = torch.randn(1, joe_model.cfg.inter_channels, 96, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = joe_model.vocode(z)[0]
        joined = torch.cat(list(decode_windows(joe_model, z, 16, context_frames=1)))
    assert (joined - full).abs().max().item() > 1e-3


def test_stream_with_speaker_and_resblock1():
    cfg = tiny_config(num_speakers=2)
    cfg = type(cfg)(**{**cfg.__dict__, "resblock": "1", "resblock_kernel_sizes": (3, 7),
                       "resblock_dilation_sizes": ((1, 3, 5), (1, 3, 5))})
    model = random_model(cfg, seed=5)
    z = torch.randn(1, cfg.inter_channels, 70, generator=torch.Generator().manual_seed(4))
    sid = torch.tensor([1])
    with torch.inference_mode():
        full = model.vocode(z, sid=sid)[0]
        joined = torch.cat(list(decode_windows(model, z, 9, sid=sid)))
    assert (joined - full).abs().max().item() <= 1e-4


@pytest.mark.parametrize("frames", [1, 7, 70])
def test_last_stage_on_halves_equals_one_row(joe_model, frames):
    """The last stage on each row's two halves, each with the margin that reaches it,
    renders what the row renders whole."""
    z = torch.randn(2, joe_model.cfg.inter_channels, frames, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        whole = joe_model.dec(z, rows=True)
        halves = joe_model.dec(z, rows=True, halves=True)
    assert halves.shape == whole.shape == (2, 1, frames * joe_model.hop_length)
    assert (halves - whole).abs().max().item() <= 1e-5


def test_halves_with_too_little_margin_would_show(joe_model, monkeypatch):
    # Guards the test above: halves cut with less margin than reaches them do differ.
    from voxpipe.stages.families.piper.vits import model as vits_model

    monkeypatch.setattr(vits_model, "tail_reach", lambda dec: 8)
    z = torch.randn(1, joe_model.cfg.inter_channels, 40, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert (joe_model.dec(z, rows=True, halves=True) - joe_model.dec(z, rows=True)).abs().max().item() > 1e-3


def test_halves_with_speaker_and_resblock1_and_odd_hop():
    # Another block type, a speaker embedding and an odd hop (the first half takes the odd sample).
    cfg = tiny_config(num_speakers=2)
    cfg = type(cfg)(**{**cfg.__dict__, "resblock": "1", "resblock_kernel_sizes": (3, 7),
                       "resblock_dilation_sizes": ((1, 3, 5), (1, 3, 5)), "upsample_rates": (3, 5, 3),
                       "upsample_kernel_sizes": (7, 11, 7)})
    model = random_model(cfg, seed=6)
    sid = torch.tensor([1])
    for frames in (1, 2, 9, 31):
        z = torch.randn(1, cfg.inter_channels, frames, generator=torch.Generator().manual_seed(frames))
        with torch.inference_mode():
            g = model.speaker(sid, 1, z.device)
            whole = model.dec(z, g=g, rows=True)
            halves = model.dec(z, g=g, rows=True, halves=True)
        assert halves.shape == whole.shape == (1, 1, frames * 45)
        assert (halves - whole).abs().max().item() <= 1e-5


@pytest.fixture(scope="module", params=[1, 3], ids=["single", "multi"])
def exported(request, tmp_path_factory):
    model = random_model(tiny_config(num_speakers=request.param), seed=request.param)
    root = tmp_path_factory.mktemp(f"export{request.param}")
    prior = ort.InferenceSession(str(export_prior(model, root / "prior.onnx")), providers=["CPUExecutionProvider"])
    flow = ort.InferenceSession(str(export_flow(model, root / "flow.onnx")), providers=["CPUExecutionProvider"])
    vocoder = ort.InferenceSession(str(export_vocoder(model, root / "vocoder.onnx")),
                                   providers=["CPUExecutionProvider"])
    return model, (prior, flow), vocoder


def _acoustic(parts: tuple, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The exported prior over the batch, then the flow over each item's own frames (as
    the engine runs them): (z [B, C, frames] zero past each item, frames)."""
    prior, flow = parts
    z_p, frames, _durations = prior.run(None, feeds)
    z = np.zeros_like(z_p)
    for i, n in enumerate(frames):
        item = {"z_p": np.ascontiguousarray(z_p[i:i + 1, :, :n])}
        if "sid" in feeds:
            item["sid"] = feeds["sid"][i:i + 1]
        z[i, :, :n] = flow.run(None, item)[0][0]
    return z, frames


# Batch sizes and lengths other than the ones traced, to exercise the dynamic axes.
@pytest.mark.parametrize("lengths", [[9], [57, 31, 44]])
def test_exported_parts_match_torch(exported, lengths):
    model, acoustic, vocoder = exported
    rng = np.random.default_rng(len(lengths))
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 150, n)
    lens = np.array(lengths, dtype=np.int64)
    multi = model.cfg.n_speakers > 1
    sid = np.arange(len(lengths), dtype=np.int64) % model.cfg.n_speakers
    # Noise on, from per-item seeds: the graph takes it as inputs and matches torch's draws.
    seeds = [30 + i for i in range(len(lengths))]
    channels, width = model.cfg.inter_channels, 12 * max(lengths)
    dp_noise = np.zeros((len(lengths), 2, max(lengths)), dtype=np.float32)
    for i, (seed, n) in enumerate(zip(seeds, lengths)):
        dp_noise[i, :, :n] = noise.duration_noise(seed, n)
    z_noise = np.stack([noise.latent_noise(seed, channels, width) for seed in seeds])
    feeds = {"input": ids, "input_lengths": lens, "scales": np.array([0.667, 1.1, 0.8], dtype=np.float32),
             "dp_noise": dp_noise, "z_noise": z_noise}
    if multi:
        feeds["sid"] = sid
    z, frames = _acoustic(acoustic, feeds)
    assert int(frames.max()) <= width
    sid_t = torch.from_numpy(sid) if multi else None
    with torch.inference_mode():
        z_t, frames_t = model.acoustic(torch.from_numpy(ids), torch.from_numpy(lens), 0.667, 1.1, 0.8, sid=sid_t,
                                       seeds=seeds)
    assert np.array_equal(frames, frames_t.numpy())
    assert z.shape == tuple(z_t.shape) and np.abs(z - z_t.numpy()).max() <= 1e-4

    audio = vocoder.run(None, {"z": z, "frames": frames, **({"sid": sid} if multi else {})})[0]
    with torch.inference_mode():
        audio_t = model.vocode(torch.from_numpy(z), torch.from_numpy(frames), sid=sid_t).numpy()
    assert audio.shape == audio_t.shape == (len(lengths), z.shape[2] * model.hop_length)
    assert np.abs(audio - audio_t).max() <= 1e-4
    # Padded items decode as if alone, in the exported graph too.
    last = len(lengths) - 1
    alone = vocoder.run(None, {"z": z[last:, :, :frames[last]], "frames": frames[last:],
                               **({"sid": sid[last:]} if multi else {})})[0]
    assert np.abs(alone[0] - audio[last, :alone.shape[1]]).max() <= 1e-4


def test_exported_acoustic_takes_its_noise_as_inputs(exported):
    """The same noise gives the same latent; other noise another; a prior noise narrower
    than the frames is padded (the caller sees frames > width and draws again)."""
    model, acoustic, _ = exported

    def run(seed: int, width: int) -> tuple[np.ndarray, int]:
        feeds = {"input": np.arange(1, 21, dtype=np.int64)[None], "input_lengths": np.array([20], dtype=np.int64),
                 "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32),
                 "dp_noise": noise.duration_noise(seed, 20)[None],
                 "z_noise": noise.latent_noise(seed, model.cfg.inter_channels, width)[None]}
        if "sid" in {i.name for i in acoustic[0].get_inputs()}:
            feeds["sid"] = np.array([0], dtype=np.int64)
        z, frames = _acoustic(acoustic, feeds)
        return z, int(frames[0])

    first, frames = run(5, 400)
    assert np.array_equal(first, run(5, 400)[0]) and np.array_equal(first, run(5, frames)[0])
    other = run(6, 400)[0]
    assert other.shape != first.shape or not np.allclose(first, other)
    narrow, narrow_frames = run(5, frames - 3)
    assert narrow_frames == frames and not np.array_equal(narrow, first)


def test_exported_single_vocoder_matches_torch(exported, tmp_path):
    """The engine's vocoder graph (2-D, its last stage on half-rows) at row counts and
    lengths other than the ones traced, against torch's plain decode."""
    model = exported[0]
    multi = model.cfg.n_speakers > 1
    session = ort.InferenceSession(str(export_single_vocoder(model, tmp_path / "v.onnx")),
                                   providers=["CPUExecutionProvider"])
    sid = np.array([model.cfg.n_speakers - 1], dtype=np.int64)
    for rows, frames in ((1, 1), (3, 37)):
        z = np.random.default_rng(frames).standard_normal((rows, model.cfg.inter_channels, frames)).astype(np.float32)
        audio = session.run(None, {"z": z, **({"sid": sid} if multi else {})})[0]
        with torch.inference_mode():
            expected = model.vocode(torch.from_numpy(z), sid=torch.from_numpy(sid).repeat(rows) if multi else None)
        assert audio.shape == (rows, frames * model.hop_length)
        assert np.abs(audio - expected.numpy()).max() <= 1e-4
