"""Activation quantization, quantize / dequantize (coremltools ``ops/defs/iOS17/quantization_ops.py``)."""

from __future__ import annotations

import torch

from ._utils import axis_shaped
from .registry import register_op

_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15), "int16": (-32768, 32767),
           "uint16": (0, 65535)}


@register_op("quantize")
def _quantize(c):
    x = c.t("input")
    ax = c.p("axis", None)
    scale = axis_shaped(c.t("scale"), x.ndim, ax)
    q = torch.round(x / scale)  # half to even, before the zero point
    if c.has("zero_point"):
        q = q + axis_shaped(c.t("zero_point"), x.ndim, ax).to(torch.float32)
    lo, hi = _QRANGE[c.p("output_dtype")]
    return q.clamp(lo, hi)


@register_op("dequantize")
def _dequantize(c):
    x = c.t("input").to(torch.float32)
    ax = c.p("axis", None)
    if c.has("zero_point"):
        x = x - axis_shaped(c.t("zero_point"), x.ndim, ax).to(torch.float32)
    return x * axis_shaped(c.t("scale"), x.ndim, ax)
