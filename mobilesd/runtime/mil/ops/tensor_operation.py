"""Tensor ops (coremltools ``ops/defs/iOS15..iOS17/tensor_operation.py``): concat / split / stack / tile,
tensor creation (shape, fill, range_1d, one_hot), band_part, cumsum, pad, sorting, non_zero."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..dtypes import FLOAT
from ._utils import as_float, axis
from .registry import register_op


@register_op("identity", moves_values=True)
def _identity(c):
    return c.t("x")


@register_op("concat", moves_values=True)
def _concat(c):
    vals = c.ts("values")
    ax = axis(int(c.p("axis")), vals[0].ndim)
    if c.p("interleave", False):
        st = torch.stack(vals, dim=ax + 1)
        shape = list(vals[0].shape)
        shape[ax] *= len(vals)
        return st.reshape(shape)
    return torch.cat(vals, dim=ax)


@register_op("stack", moves_values=True)
def _stack(c):
    vals = c.ts("values")
    return torch.stack(vals, dim=axis(int(c.p("axis")), vals[0].ndim + 1))


@register_op("split", moves_values=True)
def _split(c):
    x = c.t("x")
    ax = axis(int(c.p("axis")), x.ndim)
    sizes = c.ints("split_sizes")
    if sizes is None:
        n = int(c.p("num_splits"))
        sizes = [x.shape[ax] // n] * n
    return tuple(torch.split(x, sizes, dim=ax))


@register_op("flatten2d", moves_values=True)
def _flatten2d(c):
    x = c.t("x")
    ax = axis(int(c.p("axis", 1)), x.ndim)
    before = int(np.prod(x.shape[:ax], dtype=np.int64))
    return x.reshape(before, -1)


@register_op("tile", moves_values=True)
def _tile(c):
    return c.t("x").repeat(c.ints("reps"))


@register_op("shape")
def _shape(c):
    return torch.tensor(list(c.t("x").shape), dtype=torch.int32)


@register_op("fill")
def _fill(c):
    return torch.full(c.ints("shape"), c.p("value", 0.0))


@register_op("fill_like")  # iOS16
def _fill_like(c):
    return torch.full(tuple(c.t("ref_tensor").shape), c.p("value", 0.0))


@register_op("range_1d")
def _range_1d(c):
    start, end, step = c.p("start"), c.p("end"), c.p("step")
    return torch.arange(start, end, step, dtype=torch.float64 if c.out_dtype() in FLOAT else torch.int64)


@register_op("band_part")
def _band_part(c):
    x = c.t("x")
    lower, upper = int(c.p("lower", -1)), int(c.p("upper", -1))
    m = torch.arange(x.shape[-2]).unsqueeze(1)
    n = torch.arange(x.shape[-1]).unsqueeze(0)
    keep = ((lower < 0) | ((m - n) <= lower)) & ((upper < 0) | ((n - m) <= upper))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


@register_op("cumsum")
def _cumsum(c):
    x = as_float(c.t("x")) if c.out_dtype() in FLOAT else c.t("x")
    ax = axis(int(c.p("axis", 0)), x.ndim)
    rev = bool(c.p("reverse", False))
    if rev:
        x = torch.flip(x, [ax])
    y = torch.cumsum(x, dim=ax)
    if c.p("exclusive", False):
        y = y - x
    if rev:
        y = torch.flip(y, [ax])
    return y


@register_op("pad")
def _pad(c):
    x = c.t("x")
    pad = c.ints("pad")
    mode = c.p("mode", "constant")
    n = len(pad) // 2
    flat = []
    for i in range(n - 1, -1, -1):  # torch wants the last dimension first
        flat += [pad[2 * i], pad[2 * i + 1]]
    if mode == "constant":
        return F.pad(x, flat, mode="constant", value=float(c.p("constant_val", 0.0)))
    # torch's reflect/replicate pad wants a batch+channel prefix: fold the leading dims in
    lead = x.shape[:x.ndim - n]
    y = x.reshape((1, int(np.prod(lead, dtype=np.int64))) + tuple(x.shape[x.ndim - n:]))
    if n > 3:
        raise ValueError("reflect/replicate pad over more than 3 dimensions")
    y = F.pad(y, flat, mode="reflect" if mode == "reflect" else "replicate")
    return y.reshape(tuple(lead) + tuple(y.shape[2:]))


@register_op("one_hot")
def _one_hot(c):
    idx = c.t("indices").long()
    size = int(c.p("one_hot_vector_size"))
    on, off = c.p("on_value", 1), c.p("off_value", 0)
    oh = F.one_hot(idx.clamp(0, size - 1), size).bool() & (idx >= 0).unsqueeze(-1) & (idx < size).unsqueeze(-1)
    ax = axis(int(c.p("axis", -1)), idx.ndim + 1)
    out = torch.where(oh, torch.tensor(on, dtype=torch.float64), torch.tensor(off, dtype=torch.float64))
    return out.movedim(-1, ax)


@register_op("non_zero")
def _non_zero(c):
    return torch.nonzero(c.t("x"))


@register_op("argsort")
def _argsort(c):
    x = c.t("x")
    return torch.argsort(x, dim=int(c.p("axis", -1)), descending=not c.p("ascending", False), stable=True)


@register_op("topk")
def _topk(c):
    x = c.t("x")
    k, ax = int(c.p("k", 1)), axis(int(c.p("axis", -1)), x.ndim)
    asc = bool(c.p("ascending", False))
    order = torch.argsort(x, dim=ax, descending=not asc, stable=True).narrow(ax, 0, k)
    vals = torch.gather(x, ax, order)
    if len(c.op.outputs) == 1:
        return vals
    return vals, order
