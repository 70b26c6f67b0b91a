"""One decoder layer (`t2s.Block`) run for many sequences of one new token each.

The batched decoders differ only in how a row attends to its own keys and values (a
list of per-sequence caches, or a slot of one static cache), so that part is passed in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import Tensor
from torch.nn import functional as F

from voxpipe.stages.families.gpt_sovits.decoder.t2s import Block

if TYPE_CHECKING:
    from voxpipe.stages.families.gpt_sovits.decoder.int8 import Int8Block

# (q, k, v) of the new tokens, each [n, 1, d] -> attention output [n, heads, 1, d / heads].
Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


def row_linear(x: Tensor, weight: Tensor, bias: Tensor | None, exact: bool) -> Tensor:
    """x [n, 1, in] -> [n, 1, out]; `exact`: one product per row, equal to a lone row's
    on the CPU, so a row's numbers do not depend on the other rows or their count."""
    if not exact:
        return F.linear(x, weight, bias)
    n = x.shape[0]
    w = weight.t().unsqueeze(0).expand(n, -1, -1)
    if bias is None:
        return x.bmm(w)
    return bias.view(1, 1, -1).expand(n, 1, -1).baddbmm(x, w)


def block_rows(layer: Block, x: Tensor, attend: Attend, exact: bool, int8: "Int8Block | None" = None) -> Tensor:
    """`Block.forward` for x [n, 1, d], the same operations row by row; `int8`: the
    layer's products with int8 weights instead (int8.py)."""
    n, _, d = x.shape
    attn_in = layer.self_attn
    if int8 is not None:
        q, k, v = int8.qkv(x).chunk(3, dim=-1)
        attn = int8.out(attend(q, k, v).transpose(1, 2).reshape(n, 1, d))
        x = layer.norm1(x + attn)
        return layer.norm2(x + int8.ff2(F.relu(int8.ff1(x))))
    qkv = row_linear(x, attn_in.in_proj_weight, attn_in.in_proj_bias, exact)
    q, k, v = qkv.chunk(3, dim=-1)
    attn = attend(q, k, v).transpose(1, 2).reshape(n, 1, d)
    attn = row_linear(attn, attn_in.out_proj.weight, attn_in.out_proj.bias, exact)
    x = layer.norm1(x + attn)
    ff = row_linear(F.relu(row_linear(x, layer.linear1.weight, layer.linear1.bias, exact)),
                    layer.linear2.weight, layer.linear2.bias, exact)
    return layer.norm2(x + ff)
