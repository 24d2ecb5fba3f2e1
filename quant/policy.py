"""Which layers are quantized, and at how many bits (EfficientDM's layer policy, configurable).

A policy is an ordered list of rules ``{"pattern": fnmatch glob on the layer's module name,
"weights": "default" | bits | null, "acts": "default" | bits | null}``; the first matching rule wins,
``null`` keeps the layer (or its input) in full precision. Defaults, following EfficientDM / Q-Diffusion:
- the first and last layers (conv_in, conv_out) stay at 8 bits (weights and activations): they are tiny
  and the whole image passes through them;
- skip connections (resnet conv_shortcut) and downsampling convs stay in full precision (the layers
  the quantized-diffusion papers single out as most sensitive; they are a small share of the weights);
- every other Conv2d / Linear of the UNet is quantized at the requested bits;
- attention's matmuls (QK^T and softmax x V) have no weights and stay in floating point: no activation
  quantizer is put on them.
"""

from __future__ import annotations

import fnmatch

from torch import nn

DEFAULT_RULES: list[dict] = [
    {"pattern": "conv_in", "weights": 8, "acts": 8},
    {"pattern": "conv_out", "weights": 8, "acts": 8},
    {"pattern": "*conv_shortcut", "weights": None, "acts": None},
    {"pattern": "*downsamplers.*", "weights": None, "acts": None},
    {"pattern": "*", "weights": "default", "acts": "default"},
]

# text encoder / VAE decoder (optional): weights only; token and position embeddings are not Linear layers
AUX_RULES: list[dict] = [{"pattern": "*", "weights": "default", "acts": None}]


def _bits(value, default: int | None, cap_at_default: bool = False) -> int | None:
    if value == "default":
        return default
    if value is None or default is None:
        return None if value is None else (value if not cap_at_default else None)
    return max(int(value), default) if cap_at_default else int(value)


def resolve(module: nn.Module, weight_bits: int, act_bits: int | None, rules: list[dict] | None = None,
            quantize_acts: bool = True) -> dict[str, dict]:
    """{layer name: {"weights": bits|None, "acts": bits|None}} for every Conv2d / Linear under ``module``.

    A rule's fixed bit width never lowers the request (``--weights 8`` keeps conv_in at 8; A16 keeps every
    activation in float: the 8-bit first / last rule only applies when activations are quantized)."""
    rules = rules if rules is not None else DEFAULT_RULES
    out = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        rule = next((r for r in rules if fnmatch.fnmatchcase(name, r["pattern"])), None)
        if rule is None:
            continue
        w = _bits(rule["weights"], weight_bits, cap_at_default=True)
        a = _bits(rule["acts"], act_bits, cap_at_default=True) if (quantize_acts and act_bits) else None
        if w is None and a is None:
            continue
        out[name] = {"weights": w, "acts": a}
    return out


def fixed_width(name: str, rules: list[dict] | None = None) -> bool:
    """Whether the first rule matching ``name`` fixes its weight width (e.g. conv_in / conv_out at 8 bits) rather
    than taking the requested one ("default")."""
    rules = rules if rules is not None else DEFAULT_RULES
    rule = next((r for r in rules if fnmatch.fnmatchcase(name, r["pattern"])), None)
    return rule is not None and rule["weights"] not in ("default", None)
