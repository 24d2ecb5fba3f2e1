"""Elementwise binary ops (coremltools ``ops/defs/iOS15/elementwise_binary.py``), numpy broadcasting."""

from __future__ import annotations

import torch

from ._utils import as_float
from .registry import register, register_op

_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "equal": torch.eq, "not_equal": torch.ne, "less": torch.lt, "less_equal": torch.le,
    "greater": torch.gt, "greater_equal": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}
_PICKS_AN_INPUT = {"maximum", "minimum"}


def _binary(fn):
    return lambda c: fn(c.t("x"), c.t("y"))


for _name, _fn in _BINARY.items():
    register(_name, _binary(_fn), moves_values=_name in _PICKS_AN_INPUT)


@register_op("real_div")
def _real_div(c):
    return torch.div(as_float(c.t("x")), as_float(c.t("y")))


@register_op("pow")
def _pow(c):
    return torch.pow(as_float(c.t("x")), c.t("y"))


@register_op("floor_div")
def _floor_div(c):
    return torch.div(c.t("x"), c.t("y"), rounding_mode="floor")


@register_op("mod")
def _mod(c):
    return torch.remainder(c.t("x"), c.t("y"))
