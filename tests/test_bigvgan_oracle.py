"""The v3 vocoder against NVIDIA's own BigVGAN code (the `bigvgan` package, whose
generator GPT-SoVITS copies but for an optional CUDA kernel), live: both read the same
random-weight `bigvgan_generator.pt`, written in the layout the pretrained folder ships
(weight-norm pairs, the anti-aliasing filters stored), and must give the same audio.

`tools/dev.sh setup` installs the package without its training dependencies
(`pip install --no-deps bigvgan==2.4.1`; it needs librosa and huggingface_hub to import).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from voxpipe.stages.families.gpt_sovits.models import bigvgan as ours_module  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice_v3 import write_vocoder  # noqa: E402

# The package builds its generator with the old weight_norm API and says so on each build.
pytestmark = [pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning"),
              pytest.mark.reference, pytest.mark.slow]


@pytest.fixture(scope="module")
def nvidia_bigvgan():
    """NVIDIA's package, imported when a test here runs: the import takes seconds, which a
    run that leaves these tests out should not pay while it collects."""
    return pytest.importorskip("bigvgan")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_vocoder(tmp_path_factory.mktemp("bigvgan") / ".gsv-pretrained", "v3", "tiny", seed=3)


def _theirs(nvidia_bigvgan, folder: Path) -> torch.nn.Module:
    from bigvgan.env import AttrDict

    h = AttrDict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    model = nvidia_bigvgan.BigVGAN(h, use_cuda_kernel=False)
    state = torch.load(str(folder / "bigvgan_generator.pt"), map_location="cpu", weights_only=True)["generator"]
    model.load_state_dict(state, strict=True)  # every key, filters included: the file is theirs to read too
    model.remove_weight_norm()
    return model.eval()


def _mel(batch: int, frames: int, seed: int) -> torch.Tensor:
    """Log-mel-like input: GPT-SoVITS feeds the vocoder denormalized log mels around -5."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 100, frames, generator=generator) * 1.5 - 5.0


def test_same_filters_as_the_package(nvidia_bigvgan, folder):
    theirs = dict(_theirs(nvidia_bigvgan, folder).named_buffers())
    ours = dict(ours_module.load_bigvgan(folder).named_buffers())
    filters = [k for k in theirs if k.endswith(".filter")]
    assert filters and set(filters) <= set(ours)
    for key in filters:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-7, rtol=0)


@pytest.mark.parametrize("batch,frames", [(1, 37), (2, 64)])
def test_audio_equals_the_package(nvidia_bigvgan, folder, batch, frames):
    theirs, ours = _theirs(nvidia_bigvgan, folder), ours_module.load_bigvgan(folder).eval()
    mel = _mel(batch, frames, seed=frames)
    with torch.inference_mode():
        expected, got = theirs(mel), ours(mel)
    assert got.shape == expected.shape == (batch, 1, frames * 256)
    assert expected.abs().max() > 1e-3  # a real signal, so that the tolerance means something
    assert (got - expected).abs().max().item() <= 1e-3
