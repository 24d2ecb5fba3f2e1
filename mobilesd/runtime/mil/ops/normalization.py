"""Normalizations (coremltools ``ops/defs/iOS15/normalization.py``; group norm arrives decomposed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import axis, per_channel
from .registry import register_op


def _mean_var(x, dims):
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return mean, var


@register_op("batch_norm")
def _batch_norm(c):
    # gamma (x - mean) / sqrt(variance + epsilon) + beta, per channel (axis 1)
    return F.batch_norm(c.t("x"), c.t("mean"), c.t("variance"), c.t("gamma") if c.has("gamma") else None,
                        c.t("beta") if c.has("beta") else None, training=False, eps=c.p("epsilon", 1e-5))


@register_op("instance_norm")
def _instance_norm(c):
    x = c.t("x")
    dims = tuple(range(2, x.ndim))
    mean, var = _mean_var(x, dims)
    y = (x - mean) / torch.sqrt(var + c.p("epsilon", 1e-5))
    if c.has("gamma"):
        y = y * per_channel(c.t("gamma"), x.ndim)
    if c.has("beta"):
        y = y + per_channel(c.t("beta"), x.ndim)
    return y


@register_op("layer_norm")
def _layer_norm(c):
    x = c.t("x")
    axes = c.ints("axes")
    axes = list(range(x.ndim)) if axes is None else sorted(axis(a, x.ndim) for a in axes)
    eps = c.p("epsilon", 1e-5)
    if axes == list(range(x.ndim - len(axes), x.ndim)):
        g = c.t("gamma") if c.has("gamma") else None
        b = c.t("beta") if c.has("beta") else None
        return F.layer_norm(x, x.shape[x.ndim - len(axes):], g, b, eps)
    mean, var = _mean_var(x, tuple(axes))
    y = (x - mean) / torch.sqrt(var + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if c.has("gamma"):
        y = y * c.t("gamma").reshape(shape)
    if c.has("beta"):
        y = y + c.t("beta").reshape(shape)
    return y


@register_op("l2_norm")
def _l2_norm(c):
    x = c.t("x")
    dims = tuple(range(x.ndim - 3, x.ndim))
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + c.p("epsilon", 1e-6))


@register_op("local_response_norm")
def _lrn(c):
    x = c.t("x")
    size = int(c.p("size"))
    alpha, beta, k = c.p("alpha", 1e-4), c.p("beta", 0.75), c.p("k", 1.0)
    sq = (x * x).unsqueeze(1)  # [n, 1, C, *D]
    pad = [0, 0] * (x.ndim - 2) + [size // 2, (size - 1) // 2]
    sq = F.pad(sq, pad)
    window = sq.unfold(2, size, 1).sum(-1).squeeze(1)
    return x / (k + alpha / size * window) ** beta
