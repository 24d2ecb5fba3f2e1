"""Elementwise unary ops (coremltools ``ops/defs/iOS15/elementwise_unary.py``, iOS17's ``cast`` / ``clip`` /
``inverse`` / ``log`` / ``rsqrt``)."""

from __future__ import annotations

import torch

from .registry import register, register_op

_UNARY = {
    "abs": torch.abs, "acos": torch.acos, "asin": torch.asin, "atan": torch.atan, "atanh": torch.atanh,
    "ceil": torch.ceil, "cos": torch.cos, "cosh": torch.cosh, "erf": torch.erf, "exp": torch.exp,
    "exp2": torch.exp2, "floor": torch.floor, "round": torch.round,  # torch.round: half to even (0.5 -> 0)
    "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh, "sqrt": torch.sqrt, "square": torch.square,
    "tan": torch.tan, "tanh": torch.tanh, "logical_not": torch.logical_not,
}


def _unary(fn):
    return lambda c: fn(c.t("x"))


for _name, _fn in _UNARY.items():
    register(_name, _unary(_fn))


@register_op("inverse")
def _inverse(c):
    return 1.0 / (c.t("x") + c.p("epsilon", 1e-4))


@register_op("log")
def _log(c):
    return torch.log(c.t("x") + c.p("epsilon", 1e-45))


@register_op("rsqrt")
def _rsqrt(c):
    return torch.rsqrt(c.t("x") + c.p("epsilon", 1e-12))


@register_op("clip")
def _clip(c):
    return torch.clamp(c.t("x"), c.p("alpha"), c.p("beta"))


@register_op("threshold")
def _threshold(c):
    return torch.clamp(c.t("x"), min=c.p("alpha"))


@register_op("cast")
def _cast(c):
    x = c.t("x")
    if c.out_dtype() == "bool":
        return x != 0
    return x  # the declared dtype is applied by the interpreter (float -> int truncates, like numpy astype)
