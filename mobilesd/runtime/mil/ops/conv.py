"""conv and conv_transpose, 1-3 spatial dims (coremltools ``ops/defs/iOS15/conv.py``)."""

from __future__ import annotations

import torch.nn.functional as F

from ._utils import pad_spatial, spatial_pads
from .registry import register_op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register_op("conv")
def _conv(c):
    x, w = c.t("x"), c.t("weight")
    n = x.ndim - 2
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    pads = spatial_pads(c.p("pad_type", "valid"), x.shape[2:], w.shape[2:], strides, dil, c.ints("pad", [0] * 2 * n))
    b = c.t("bias") if c.has("bias") else None
    groups = int(c.p("groups", 1))
    if all(a == bb for a, bb in pads):
        return _CONV[n](x, w, b, stride=strides, padding=[a for a, _ in pads], dilation=dil, groups=groups)
    return _CONV[n](pad_spatial(x, pads), w, b, stride=strides, padding=0, dilation=dil, groups=groups)


@register_op("conv_transpose")
def _conv_transpose(c):
    x, w = c.t("x"), c.t("weight")
    n = x.ndim - 2
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    groups = int(c.p("groups", 1))
    b = c.t("bias") if c.has("bias") else None
    y = _CONV_T[n](x, w, b, stride=strides, padding=0, dilation=dil, groups=groups)
    kind = c.p("pad_type", "valid")
    full = y.shape[2:]
    out_shape = c.ints("output_shape")
    if out_shape is not None:
        target = out_shape[2:]
    else:
        target = [int(d) for d in c.out_shape()[2:]]
    if kind == "custom" and out_shape is None:
        pad = c.ints("pad", [0] * 2 * n)
        before = [pad[2 * i] for i in range(n)]
    elif kind == "same":
        before = [max(0, (full[i] - target[i])) // 2 for i in range(n)]
    else:
        before = [0] * n
    index = [slice(None), slice(None)]
    grow = []
    for i in range(n):
        end = min(full[i], before[i] + target[i])
        index.append(slice(before[i], end))
        grow.append(target[i] - (end - before[i]))
    y = y[tuple(index)]
    if any(grow):
        y = pad_spatial(y, [(0, g) for g in grow])
    return y
