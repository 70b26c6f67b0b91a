"""ONNX export of a VitsModel: the acoustic part as prior and flow, the vocoder, or Piper's
one-graph model.

These use the TorchScript-based exporter (dynamo=False), the route Piper's own export
takes: it needs no onnxscript (torch 2.13's default dynamo exporter does; with it
installed that one handles these graphs too) and it keeps module scopes in node names,
which the loader uses. Constant folding stays off so that every initializer keeps its
parameter name (folding renames e.g. exp(-logs) and transposed relative embeddings);
onnxruntime folds those constants itself when it loads the graph.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from voxpipe.stages.families.piper.vits.model import VitsModel

OPSET = 15


class PriorGraph(nn.Module):
    """(input, input_lengths, scales[3], dp_noise [B, 2, phonemes], z_noise [B, C, >= frames],
    sid?) -> (z_p [B, C, frames], frames [B], durations [B, phonemes]: the latent frames
    each phoneme id lasts): everything before the flow. The noise is an input, drawn from
    the chunk's seed (stages/families/piper/noise.py), so the graph renders what the torch
    engine does; a z_noise narrower than the frames is zero-padded, and the caller draws
    again. The flow then runs on windows of z_p (FlowGraph), so a long sentence's
    first audio waits for the flow over its first window only."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, lengths: Tensor, scales: Tensor, dp_noise: Tensor, z_noise: Tensor,
                sid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z_p, frames, durations, _ = self.model.prior_timed(ids, lengths, scales[0], scales[1], scales[2], sid=sid,
                                                           dp_noise=dp_noise, z_noise=z_noise)
        return z_p, frames, durations


class FlowGraph(nn.Module):
    """(z_p [1, C, frames], sid?) -> z: the flow over one item's frames (or a window of
    them: frames within `flow_radius` of a cut edge are wrong and are dropped)."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z_p: Tensor, sid: Tensor | None = None) -> Tensor:
        g = self.model.speaker(sid, z_p.shape[0], z_p.device)
        mask = torch.ones_like(z_p[:, :1, :])
        return self.model.flow(z_p, mask, g=g)


class VocoderGraph(nn.Module):
    """(z, frames, sid?) -> audio [B, frames * hop], each item decoded as if alone."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, frames: Tensor, sid: Tensor | None = None) -> Tensor:
        g = self.model.speaker(sid, z.shape[0], z.device)
        return self.model.dec(z, g=g, lengths=frames).squeeze(1)


class SingleVocoderGraph(nn.Module):
    """(z [rows, C, frames], sid?) -> audio [rows, samples], one speaker for all rows, no
    masks (every frame is its row's), which saves the mask products a padded batch needs.
    Its convolutions are 2-D, the layout of onnxruntime's blocked convolutions (1.2x
    faster than the 1-D graph on one thread), and the last stage runs on each row's two
    halves (Generator.forward, `halves`), so a call shares all of its work among threads:
    on 2 threads 1.13-1.23x faster than the 1-D graph (40-500 frames). Windows of a long
    sentence may also go as rows side by side, one per thread
    (stages/families/piper/engines/windows.py)."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, sid: Tensor | None = None) -> Tensor:
        g = self.model.speaker(sid, z.shape[0], z.device)
        return self.model.dec(z, g=g, rows=True, halves=True).squeeze(1)


def _example(model: VitsModel, batch: int = 2, length: int = 24) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.cfg.n_vocab, (batch, length), generator=gen)
    lengths = torch.tensor([length] + [length - 3] * (batch - 1), dtype=torch.long)
    scales = torch.tensor([0.667, 1.0, 0.8])
    sid = torch.zeros(batch, dtype=torch.long) if model.cfg.n_speakers > 1 else None
    return ids, lengths, scales, sid


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch < 2.5 has no `dynamo` switch: its exporter is the TorchScript one anyway.
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints are expected here
        torch.onnx.export(module.eval(), args, str(path), opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes={k: v for k, v in axes.items() if k in inputs + outputs},
                          do_constant_folding=False, **legacy)
    return path


def export_prior(model: VitsModel, path: Path) -> Path:
    ids, lengths, scales, sid = _example(model)
    gen = torch.Generator().manual_seed(1)
    dp_noise = torch.randn(ids.shape[0], 2, ids.shape[1], generator=gen)
    z_noise = torch.randn(ids.shape[0], model.cfg.inter_channels, 7 * ids.shape[1], generator=gen)
    args = (ids, lengths, scales, dp_noise, z_noise) + (() if sid is None else (sid,))
    inputs = ["input", "input_lengths", "scales", "dp_noise", "z_noise"] + (["sid"] if sid is not None else [])
    axes = {"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"}, "sid": {0: "batch"},
            "dp_noise": {0: "batch", 2: "phonemes"}, "z_noise": {0: "batch", 2: "noise_frames"},
            "z_p": {0: "batch", 2: "frames"}, "frames": {0: "batch"}, "durations": {0: "batch", 1: "phonemes"}}
    return _export(PriorGraph(model), args, path, inputs, ["z_p", "frames", "durations"], axes)


def export_flow(model: VitsModel, path: Path) -> Path:
    z_p = torch.randn(1, model.cfg.inter_channels, 40, generator=torch.Generator().manual_seed(2))
    sid = torch.zeros(1, dtype=torch.long) if model.cfg.n_speakers > 1 else None
    args = (z_p,) if sid is None else (z_p, sid)
    inputs = ["z_p"] + (["sid"] if sid is not None else [])
    axes = {"z_p": {2: "frames"}, "z": {2: "frames"}}
    return _export(FlowGraph(model), args, path, inputs, ["z"], axes)


def export_vocoder(model: VitsModel, path: Path) -> Path:
    z = torch.randn(2, model.cfg.inter_channels, 20, generator=torch.Generator().manual_seed(0))
    frames = torch.tensor([20, 14], dtype=torch.long)
    sid = torch.zeros(2, dtype=torch.long) if model.cfg.n_speakers > 1 else None
    args = (z, frames) if sid is None else (z, frames, sid)
    inputs = ["z", "frames"] + (["sid"] if sid is not None else [])
    axes = {"z": {0: "batch", 2: "frames"}, "frames": {0: "batch"}, "sid": {0: "batch"},
            "audio": {0: "batch", 1: "samples"}}
    return _export(VocoderGraph(model), args, path, inputs, ["audio"], axes)


def export_single_vocoder(model: VitsModel, path: Path) -> Path:
    """SingleVocoderGraph, any number of rows and frames."""
    z = torch.randn(2, model.cfg.inter_channels, 20, generator=torch.Generator().manual_seed(0))
    sid = torch.zeros(1, dtype=torch.long) if model.cfg.n_speakers > 1 else None  # one speaker for every row
    args = (z,) if sid is None else (z, sid)
    inputs = ["z"] + (["sid"] if sid is not None else [])
    axes = {"z": {0: "rows", 2: "frames"}, "audio": {0: "rows", 1: "samples"}}
    return _export(SingleVocoderGraph(model), args, path, inputs, ["audio"], axes)


def export_piper(model: VitsModel, path: Path) -> Path:
    """Piper's voice graph: input, input_lengths, scales, [sid] -> output [B, 1, 1, samples]."""
    ids, lengths, scales, sid = _example(model, batch=1)
    args = (ids, lengths, scales) if sid is None else (ids, lengths, scales, sid)
    inputs = ["input", "input_lengths", "scales"] + (["sid"] if sid is not None else [])
    axes = {"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
            "sid": {0: "batch_size"}, "output": {0: "batch_size", 3: "time"}}
    return _export(model, args, path, inputs, ["output"], axes)
