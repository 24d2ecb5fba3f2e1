"""Resizes and crop (coremltools ``ops/defs/iOS15..iOS17/image_resizing.py``). Not implemented:
``affine``, ``crop_resize``, ``resample``."""

from __future__ import annotations

import math

import torch

from .registry import register_op


def _grid(mode: str, n_in: int, n_out: int) -> torch.Tensor:
    """Sampling positions (in input pixels) of the documented bilinear sampling modes."""
    i = torch.arange(n_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = torch.full((1,), (n_in - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0, dtype=torch.float64)
        else:
            g = i * ((n_in - 1) / (n_out - 1))
    elif mode == "DEFAULT":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else torch.zeros(1, dtype=torch.float64)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        s = n_in / n_out
        g = i * s + 0.5 * s - 0.5
    elif mode == "SCALE":  # upsample_bilinear(align_corners=False, half_pixel_centers=False)
        g = i * (n_in / n_out)
    else:
        raise ValueError(f"sampling mode {mode}")
    return g.clamp(0, n_in - 1)


def _lerp_axis(x: torch.Tensor, axis: int, grid: torch.Tensor) -> torch.Tensor:
    n = x.shape[axis]
    i0 = grid.floor().long().clamp(0, n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w = (grid - i0.to(grid.dtype)).to(torch.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return x.index_select(axis, i0) * (1 - w) + x.index_select(axis, i1) * w


def _bilinear(x, h_out, w_out, mode_h, mode_w=None):
    y = _lerp_axis(x, x.ndim - 2, _grid(mode_h, x.shape[-2], h_out))
    return _lerp_axis(y, x.ndim - 1, _grid(mode_w or mode_h, x.shape[-1], w_out))


@register_op("upsample_bilinear")
def _upsample_bilinear(c):
    x = c.t("x")
    sh, sw = c.p("scale_factor_height", 1), c.p("scale_factor_width", 1)
    ho, wo = math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw)
    align = bool(c.p("align_corners", True))
    half = c.p("half_pixel_centers", None)  # iOS16
    half = (not align) if half is None else bool(half)
    if align:
        mode = "STRICT_ALIGN_CORNERS"
    else:
        mode = "UNALIGN_CORNERS" if half else "SCALE"
    return _bilinear(x, ho, wo, mode)


@register_op("resize_bilinear")
def _resize_bilinear(c):
    x = c.t("x")
    return _bilinear(x, int(c.p("target_size_height", 1)), int(c.p("target_size_width", 1)),
                     c.p("sampling_mode", "DEFAULT"))


def _nearest(x, h_out, w_out):
    hi = torch.div(torch.arange(h_out) * x.shape[-2], h_out, rounding_mode="floor")
    wi = torch.div(torch.arange(w_out) * x.shape[-1], w_out, rounding_mode="floor")
    return x.index_select(x.ndim - 2, hi).index_select(x.ndim - 1, wi)


@register_op("upsample_nearest_neighbor", moves_values=True)
def _upsample_nn(c):
    x = c.t("x")
    sh, sw = c.p("scale_factor_height", 1), c.p("scale_factor_width", 1)
    if float(sh).is_integer() and float(sw).is_integer():
        return x.repeat_interleave(int(sh), dim=-2).repeat_interleave(int(sw), dim=-1)
    return _nearest(x, math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw))


@register_op("resize_nearest_neighbor", moves_values=True)
def _resize_nn(c):
    x = c.t("x")
    return _nearest(x, int(c.p("target_size_height")), int(c.p("target_size_width")))


@register_op("resize")  # iOS17
def _resize(c):
    x = c.t("x")
    shape, k = c.ints("shape"), int(c.p("resized_dims"))
    target = list(x.shape)
    for j in range(1, k + 1):
        s = shape[-j]
        target[-j] = x.shape[-j] if s == 0 else s
    if k > 2:
        raise ValueError("resize over more than 2 dimensions")
    mode = c.p("interpolation_mode", "LINEAR")
    sampling = c.p("sampling_mode", "DEFAULT")
    y = x
    for j in range(1, k + 1):
        axis = x.ndim - j
        if mode == "NEAREST_NEIGHBOR":
            idx = torch.div(torch.arange(target[axis]) * x.shape[axis], target[axis], rounding_mode="floor")
            y = y.index_select(axis, idx)
        else:
            y = _lerp_axis(y, axis, _grid(sampling, x.shape[axis], target[axis]))
    return y


@register_op("crop", moves_values=True)
def _crop(c):
    x = c.t("x")
    ch, cw = c.ints("crop_height"), c.ints("crop_width")
    return x[..., ch[0]:x.shape[-2] - ch[1], cw[0]:x.shape[-1] - cw[1]]
