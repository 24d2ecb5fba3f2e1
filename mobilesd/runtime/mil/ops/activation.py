"""Activations (coremltools ``ops/defs/iOS15/activation.py``, iOS17's versions take the same inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import per_channel
from .registry import register, register_op

_ELEMENTWISE = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "softplus": F.softplus,
    "softsign": lambda x: x / (1 + x.abs()), "relu6": lambda x: x.clamp(0, 6),
}


def _elementwise(fn):
    return lambda c: fn(c.t("x"))


for _name, _fn in _ELEMENTWISE.items():
    register(_name, _elementwise(_fn), moves_values=_name == "relu")  # relu picks x or 0


@register_op("gelu")
def _gelu(c):
    x, mode = c.t("x"), c.p("mode", "EXACT")
    if mode == "EXACT":  # 0.5 x (1 + erf(x / sqrt(2)))
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"gelu mode {mode}")


@register_op("softmax")
def _softmax(c):
    return torch.softmax(c.t("x"), dim=c.p("axis", -1))


@register_op("leaky_relu")
def _leaky_relu(c):
    x = c.t("x")
    return torch.where(x >= 0, x, c.p("alpha") * x)


@register_op("elu")
def _elu(c):
    x = c.t("x")
    return torch.where(x > 0, x, c.p("alpha") * torch.expm1(x))


@register_op("clamped_relu")
def _clamped_relu(c):
    x = c.t("x")
    return torch.clamp(torch.where(x >= 0, x, c.p("alpha") * x), max=c.p("beta"))


@register_op("linear_activation")
def _linear_activation(c):
    return c.t("x") * c.p("alpha") + c.p("beta")


@register_op("scaled_tanh")
def _scaled_tanh(c):
    return c.p("alpha") * torch.tanh(c.p("beta") * c.t("x"))


@register_op("sigmoid_hard")
def _sigmoid_hard(c):
    return torch.clamp(c.p("alpha") * c.t("x") + c.p("beta"), 0, 1)


@register_op("thresholded_relu")
def _thresholded_relu(c):
    x = c.t("x")
    return torch.where(x >= c.p("alpha"), x, torch.zeros_like(x))


@register_op("prelu")
def _prelu(c):
    x = c.t("x")
    a = per_channel(c.t("alpha"), x.ndim)
    return torch.where(x > 0, x, a * x)


@register_op("softplus_parametric")
def _softplus_parametric(c):
    x = c.t("x")
    a, b = per_channel(c.t("alpha"), x.ndim), per_channel(c.t("beta"), x.ndim)
    return a * F.softplus(b * x)
