"""const and select (coremltools keeps both in ``ops/defs/iOS15/control_flow.py``). The block ops of that
family (``cond``, ``while_loop``, the list ops) are not implemented: they raise UnsupportedMILOp."""

from __future__ import annotations

import torch

from ._utils import as_float
from .registry import register, register_op

register("const", lambda c: None)  # materialised lazily by the interpreter at its first use


@register_op("select", moves_values=True)
def _select(c):
    cond = c.t("cond")
    if cond.dtype != torch.bool:
        cond = cond != 0
    a, b = c.t("a"), c.t("b")
    if a.dtype != b.dtype:
        a, b = as_float(a), as_float(b)
    return torch.where(cond, a, b)
