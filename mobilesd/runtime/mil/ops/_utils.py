"""Helpers shared by several op families (as coremltools' ``ops/defs/_utils.py``): axes, per-channel
shapes, spatial padding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def as_float(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() else t.to(torch.float32)


def per_channel(v: torch.Tensor, rank: int) -> torch.Tensor:
    """A [C] parameter shaped to broadcast over axis 1 of a rank-``rank`` tensor."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


def axis_shaped(v: torch.Tensor, rank: int, ax: int | None) -> torch.Tensor:
    """A scalar or a vector along ``ax`` shaped to broadcast against a rank-``rank`` tensor."""
    if v.ndim == 0 or ax is None:
        return v
    shape = [1] * rank
    shape[axis(ax, rank)] = -1
    return v.reshape(shape)


def spatial_pads(kind: str, in_sizes, kernel, strides, dilations, custom) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dimension for a conv / pool ``pad_type``. ``same`` puts the extra
    element of an odd total after (coremltools' ``aggregated_pad``), ``same_lower`` before."""
    n = len(kernel)
    if kind == "valid":
        return [(0, 0)] * n
    if kind == "custom":
        return [(int(custom[2 * i]), int(custom[2 * i + 1])) for i in range(n)]
    if kind in ("same", "same_lower"):
        pads = []
        for i in range(n):
            k = (kernel[i] - 1) * dilations[i] + 1
            s, d = strides[i], in_sizes[i]
            total = max(0, s * math.ceil(d / s) - d + k - s)
            small = total // 2
            pads.append((small, total - small) if kind == "same" else (total - small, small))
        return pads
    raise ValueError(f"pad_type {kind}")


def pad_spatial(x: torch.Tensor, pads, value=0.0) -> torch.Tensor:
    if not any(a or b for a, b in pads):
        return x
    flat = []
    for a, b in reversed(pads):
        flat += [a, b]
    return F.pad(x, flat, value=value)
