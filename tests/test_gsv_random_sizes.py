"""Random GPT-SoVITS voices at the released models' size (`--size full`): the shapes the
checkpoints carry are upstream's, and the CLI takes the flag for gpt-sovits only."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from voxpipe.daemon.cli import main  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models import checkpoints  # noqa: E402
from voxpipe.stages.families.gpt_sovits.random_voice import write_gpt, write_sovits  # noqa: E402
from voxpipe.stages.families.gpt_sovits.models.sovits import SovitsConfig  # noqa: E402
from voxpipe.stages.families.gpt_sovits.decoder.t2s import T2SConfig  # noqa: E402


@pytest.mark.slow
def test_full_size_gpt_has_the_released_shape(tmp_path):
    write_gpt(tmp_path / "g.ckpt", torch.Generator().manual_seed(0), 2.0, "v2", "full")
    config, weights = checkpoints.load_gpt(tmp_path / "g.ckpt")
    cfg = T2SConfig.from_checkpoint_config(config)
    assert (cfg.n_layers, cfg.hidden_dim, cfg.n_heads) == (24, 512, 16)
    assert weights["model.h.layers.23.linear1.weight"].shape == (2048, 512)


@pytest.mark.slow
@pytest.mark.parametrize("version,gin,upsample", [("v2", 512, 512), ("v2ProPlus", 1024, 768)])
def test_full_size_sovits_follows_each_versions_config(tmp_path, version, gin, upsample):
    write_sovits(tmp_path / "s.pth", version, torch.Generator().manual_seed(0), "full")
    got, config, weights = checkpoints.load_sovits(tmp_path / "s.pth")
    cfg = SovitsConfig.from_hparams(config, got, 732)
    assert got == version and cfg.gin_channels == gin and cfg.upsample_initial_channel == upsample
    assert (cfg.n_layers, cfg.filter_channels, cfg.resblock_kernel_sizes) == (6, 768, (3, 7, 11))
    assert weights["dec.conv_pre.weight"].shape[0] == upsample


def test_size_is_for_gpt_sovits_only(tmp_path, capsys):
    assert main(["voice", "random", "p", "--family", "piper", "--size", "full", "-d", str(tmp_path)]) == 2
    assert "--size is for gpt-sovits" in capsys.readouterr().err
