"""avg_pool, max_pool, l2_pool (coremltools ``ops/defs/iOS15/pool.py``)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._utils import pad_spatial, spatial_pads
from .registry import register_op


def _pool_args(c, x):
    n = x.ndim - 2
    kernel = c.ints("kernel_sizes")
    strides = c.ints("strides", [1] * n)
    pads = spatial_pads(c.p("pad_type", "valid"), x.shape[2:], kernel, strides, [1] * n, c.ints("pad", [0] * 2 * n))
    if c.p("ceil_mode", False):
        pads = list(pads)
        for i in range(n):
            d = x.shape[2 + i] + pads[i][0] + pads[i][1]
            out = math.ceil((d - kernel[i]) / strides[i]) + 1
            if (out - 1) * strides[i] >= x.shape[2 + i] + pads[i][0] and (pads[i][0] + pads[i][1]) > 0:
                out -= 1
            need = (out - 1) * strides[i] + kernel[i] - d
            if need > 0:
                pads[i] = (pads[i][0], pads[i][1] + need)
    return kernel, strides, pads


_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window_sum(x, kernel, strides):
    n = x.ndim - 2
    return _AVG[n](x, kernel, strides) * float(np.prod(kernel))


@register_op("avg_pool")
def _avg_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    s = _window_sum(pad_spatial(x, pads), kernel, strides)
    if c.p("exclude_padding_from_average", False):
        ones = pad_spatial(torch.ones((1, 1) + tuple(x.shape[2:])), pads)
        return s / _window_sum(ones, kernel, strides)
    return s / float(np.prod(kernel))


@register_op("max_pool", moves_values=True)
def _max_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    return _MAX[x.ndim - 2](pad_spatial(x, pads, value=-math.inf), kernel, strides)


@register_op("l2_pool")
def _l2_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    return torch.sqrt(_window_sum(pad_spatial(x * x, pads), kernel, strides))
