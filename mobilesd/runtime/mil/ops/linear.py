"""linear, matmul, einsum (coremltools ``ops/defs/iOS15/linear.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import as_float
from .registry import register_op


@register_op("linear")
def _linear(c):
    return F.linear(c.t("x"), c.t("weight"), c.t("bias") if c.has("bias") else None)


@register_op("matmul")
def _matmul(c):
    x, y = as_float(c.t("x")), as_float(c.t("y"))
    if c.p("transpose_x", False) and x.ndim >= 2:
        x = x.transpose(-1, -2)
    if c.p("transpose_y", False) and y.ndim >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@register_op("einsum")
def _einsum(c):
    eq = c.p("equation").replace(" ", "")
    ops = c.ts("values")
    lhs = eq.split("->")[0].split(",")
    # MIL broadcasts size-1 batch dims (B or H of 1 on one side): expand them to the other side's size.
    sizes: dict[str, int] = {}
    for term, t in zip(lhs, ops):
        for ch, n in zip(term, t.shape):
            sizes[ch] = max(sizes.get(ch, 1), n)
    ops = [t.expand([sizes[ch] for ch in term]) for term, t in zip(lhs, ops)]
    return torch.einsum(eq, *ops)
