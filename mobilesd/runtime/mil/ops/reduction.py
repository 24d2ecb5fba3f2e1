"""reduce_* ops (coremltools ``ops/defs/iOS15/reduction.py``; iOS17's argmax/argmin take the same inputs)."""

from __future__ import annotations

import torch

from ._utils import as_float, axis
from .registry import register, register_op


def _rmax(x, axes, keep):
    return torch.amax(x, dim=axes, keepdim=keep)


def _rmin(x, axes, keep):
    return torch.amin(x, dim=axes, keepdim=keep)


def _prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.prod(dim=a, keepdim=keep)
    return x


_REDUCE = {
    "reduce_sum": lambda x, a, k: x.sum(dim=a, keepdim=k),
    "reduce_mean": lambda x, a, k: x.mean(dim=a, keepdim=k),
    "reduce_prod": _prod,
    "reduce_max": _rmax, "reduce_min": _rmin,
    "reduce_l1_norm": lambda x, a, k: x.abs().sum(dim=a, keepdim=k),
    "reduce_l2_norm": lambda x, a, k: torch.sqrt((x * x).sum(dim=a, keepdim=k)),
    "reduce_sum_square": lambda x, a, k: (x * x).sum(dim=a, keepdim=k),
    "reduce_log_sum": lambda x, a, k: torch.log(x.sum(dim=a, keepdim=k)),
    "reduce_log_sum_exp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k),
}
_PICKS_AN_INPUT = {"reduce_max", "reduce_min"}  # keep the input's dtype (ints stay ints)


def _reduction(name, fn):
    def handler(c):
        x = c.t("x")
        axes = c.ints("axes")
        axes = tuple(range(x.ndim)) if axes is None else tuple(axis(a, x.ndim) for a in axes)
        return fn(x if name in _PICKS_AN_INPUT else as_float(x), axes, bool(c.p("keep_dims", False)))
    return handler


for _name, _fn in _REDUCE.items():
    register(_name, _reduction(_name, _fn), moves_values=_name in _PICKS_AN_INPUT)


@register_op("reduce_argmax", "reduce_argmin")
def _reduce_arg(c):
    x = c.t("x")
    ax = axis(int(c.p("axis", -1)), x.ndim)
    keep = bool(c.p("keep_dims", False))
    fn = torch.argmax if c.op.op_type == "reduce_argmax" else torch.argmin
    return fn(x, dim=ax, keepdim=keep)
