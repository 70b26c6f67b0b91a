"""Int8 weights for the semantic decoder's serving steps.

A decoding step is bound by memory: at batch 16 it reads the decoder's ~300 MB of fp32
weights for 16 new tokens. With int8 weights (one scale per output channel) it reads a
quarter of that, and fbgemm's int8 products (x86, AVX2 and up) run over activations
quantized on the fly, one range per call. That range is the whole batch's, so a row's
numbers depend on its batch by more than float rounding: the precision probe
(precision.py) takes int8 only where greedy tokens on its probe texts equal fp32's.
Prefills stay in float32 (compute-bound, and run alone).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from voxpipe.stages.families.gpt_sovits.decoder.t2s import Block, Text2Semantic


BACKENDS = ("x86", "fbgemm", "onednn", "qnnpack")  # torch's quantized engines, best first


def int8_available() -> bool:
    """fbgemm (x86) or another quantized backend that runs dynamic int8 products."""
    return any(e in BACKENDS for e in torch.backends.quantized.supported_engines)


def _select_engine() -> None:
    supported = torch.backends.quantized.supported_engines
    for engine in BACKENDS:
        if engine in supported:
            if torch.backends.quantized.engine != engine:
                torch.backends.quantized.engine = engine
            return
    raise RuntimeError("this torch build has no quantized backend for int8 products")


class Int8Linear:
    """y = x W^T + b with W in int8, per output channel; x [..., in] float32."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        _select_engine()
        w = weight.detach().float().cpu()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        with warnings.catch_warnings():  # quantized tensors are how fbgemm takes its weights
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(w, scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0,
                                           torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None)
        self.bias = None if bias is None else bias.detach().float().cpu()
        self.weight_sums = q.dequantize().sum(dim=1)  # [out]: what a shift of every input adds
        self.out_features = w.shape[0]
        # An extra row holding -1 and 1: with every row mapped into [-1, 1], the call's
        # range (fbgemm quantizes the activations with one range per call) is then exactly
        # [-1, 1] whatever the other rows hold.
        self.guard = torch.zeros(1, w.shape[1])
        self.guard[0, 0], self.guard[0, -1] = -1.0, 1.0

    def __call__(self, x: Tensor) -> Tensor:
        """The product with each row mapped onto [-1, 1] first, beside the guard row: the
        activations' quantization is then the same whatever the other rows hold, so a row's
        result does not depend on its batch (a sequence's sampled tokens are then the same
        alone and batched)."""
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        low, high = torch.aminmax(rows, dim=1, keepdim=True)
        half = (high - low).clamp_(min=1e-12).mul_(0.5)
        mapped = torch.cat([torch.sub(rows, low).div_(half).sub_(1.0).clamp_(-1.0, 1.0), self.guard])
        y = torch.ops.quantized.linear_dynamic(mapped, self.packed, True)[:-1]
        # mapped = (rows - low) / half - 1, so rows W^T = y * half + (half + low) * sums
        shift = half + low
        out = shift * self.weight_sums if self.bias is None else torch.addcmul(self.bias, shift, self.weight_sums)
        return out.addcmul_(y, half).view(*shape[:-1], self.out_features)


class Int8Block:
    """One decoder layer's four products in int8: qkv, attention output, FFN in and out."""

    def __init__(self, layer: Block) -> None:
        attn = layer.self_attn
        self.qkv = Int8Linear(attn.in_proj_weight, attn.in_proj_bias)
        self.out = Int8Linear(attn.out_proj.weight, attn.out_proj.bias)
        self.ff1 = Int8Linear(layer.linear1.weight, layer.linear1.bias)
        self.ff2 = Int8Linear(layer.linear2.weight, layer.linear2.bias)


class Int8Decoder:
    """The int8 products of every layer of a decoder, and of its logits layer."""

    def __init__(self, model: Text2Semantic) -> None:
        if model.ar_predict_layer.weight.device.type != "cpu":
            raise ValueError("int8 decoding runs on the CPU")
        self.blocks = [Int8Block(layer) for layer in model.h.layers]
        self.predict = Int8Linear(model.ar_predict_layer.weight, None)
