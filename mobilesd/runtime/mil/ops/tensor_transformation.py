"""Shape ops that move values (coremltools ``ops/defs/iOS15..iOS18/tensor_transformation.py``): reshape,
transpose, squeeze, slices, reverse, space/depth shuffles. All exact in fp16 (``moves_values``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._utils import axis
from .registry import register_op


@register_op("reshape", moves_values=True)
def _reshape(c):
    x = c.t("x")
    shape = c.ints("shape")
    out = []
    k, r = len(shape), x.ndim
    for i, s in enumerate(shape):
        if s == 0:
            j = r - (k - i)  # right-aligned (iOS17); the same as positional when len(shape) == rank (iOS15)
            out.append(x.shape[j] if 0 <= j < r else 1)
        else:
            out.append(s)
    return x.reshape(out)


@register_op("reshape_like", moves_values=True)
def _reshape_like(c):
    x = c.t("x")
    refs = c.op.inputs["ref_tensors"]
    begins, ends, masks = c.ints("begins"), c.ints("ends"), [bool(m) for m in np.ravel(c.p("end_masks"))]
    shape = []
    for ref, b, e, m in zip(refs, begins, ends, masks):
        s = list(c.run.value(ref).shape)
        shape += s[b:] if m else s[b:e]
    return x.reshape(shape)


@register_op("transpose", moves_values=True)
def _transpose(c):
    x = c.t("x")
    return x.permute([axis(p, x.ndim) for p in c.ints("perm")])


@register_op("expand_dims", moves_values=True)
def _expand_dims(c):
    x = c.t("x")
    axes = c.ints("axes")
    rank = x.ndim + len(axes)
    for a in sorted(axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@register_op("squeeze", moves_values=True)
def _squeeze(c):
    x = c.t("x")
    axes = c.ints("axes")
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = {axis(a, x.ndim) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if not (i in axes and d == 1)])


def _slice_index(n: int, b, e, s, bm, em) -> list[int] | slice:
    sl = slice(None if bm else b, None if em else e, s)
    start, stop, step = sl.indices(n)
    if step > 0:
        return slice(start, max(start, stop), step)
    return list(range(start, stop, step))


def _strided_index(c, x):
    r = x.ndim
    begin, end = c.ints("begin"), c.ints("end")
    stride = c.ints("stride", [1] * r)
    bm = [bool(v) for v in np.ravel(c.p("begin_mask", [False] * r))]
    em = [bool(v) for v in np.ravel(c.p("end_mask", [False] * r))]
    sq = [bool(v) for v in np.ravel(c.p("squeeze_mask", [False] * r))]
    idx = []
    for i in range(r):
        if sq[i]:
            idx.append(axis(begin[i], x.shape[i]))
        else:
            idx.append(_slice_index(x.shape[i], begin[i], end[i], stride[i], bm[i], em[i]))
    return idx, sq


def _apply_index(x, idx):
    for i in range(len(idx) - 1, -1, -1):  # back to front so earlier dims keep their positions
        ix = idx[i]
        if isinstance(ix, int):
            x = x.select(i, ix)
        elif isinstance(ix, slice):
            x = x[(slice(None),) * i + (ix,)]
        else:
            x = x.index_select(i, torch.tensor(ix, dtype=torch.long))
    return x


@register_op("slice_by_index", moves_values=True)
def _slice_by_index(c):
    x = c.t("x")
    idx, _ = _strided_index(c, x)
    return _apply_index(x, idx)


@register_op("slice_update", moves_values=True)  # iOS18
def _slice_update(c):
    x = c.t("x").clone()
    idx, _ = _strided_index(c, x)
    lists = []
    for i, ix in enumerate(idx):
        if isinstance(ix, int):
            lists.append([ix])
        elif isinstance(ix, slice):
            lists.append(list(range(*ix.indices(x.shape[i]))))
        else:
            lists.append(ix)
    grids = torch.meshgrid(*[torch.tensor(v, dtype=torch.long) for v in lists], indexing="ij")
    upd = c.t("update").reshape([len(v) for v in lists]).to(x.dtype)
    x[tuple(grids)] = upd
    return x


@register_op("slice_by_size", moves_values=True)
def _slice_by_size(c):
    x = c.t("x")
    begin, size = c.ints("begin"), c.ints("size")
    idx = []
    for i in range(x.ndim):
        b = axis(begin[i], x.shape[i])
        idx.append(slice(b, x.shape[i] if size[i] == -1 else b + size[i]))
    return x[tuple(idx)]


@register_op("reverse", moves_values=True)
def _reverse(c):
    x = c.t("x")
    axes = c.ints("axes")
    axes = list(range(x.ndim)) if axes is None else [axis(a, x.ndim) for a in axes]
    return torch.flip(x, axes)


@register_op("reverse_sequence", moves_values=True)
def _reverse_sequence(c):
    x = c.t("x").clone()
    lengths = c.ints("lengths")
    seq, bat = axis(int(c.p("seq_axis", 0)), x.ndim), axis(int(c.p("batch_axis", 0)), x.ndim)
    src = c.t("x")
    for b, n in enumerate(lengths):
        xb, sb = x.select(bat, b), src.select(bat, b)
        s = seq - (1 if seq > bat else 0)
        if n > 0:
            xb.narrow(s, 0, n).copy_(torch.flip(sb.narrow(s, 0, n), [s]))
    return x


@register_op("sliding_windows", moves_values=True)
def _sliding_windows(c):
    x = c.t("x")
    ax = axis(int(c.p("axis")), x.ndim)
    return x.unfold(ax, int(c.p("size")), int(c.p("stride", 1))).movedim(-1, ax + 1)


@register_op("depth_to_space", moves_values=True)
def _depth_to_space(c):
    # TensorFlow's DepthToSpace (DCR order) in NCHW: the TF frontend maps tf.nn.depth_to_space to this op.
    x, b = c.t("x"), int(c.p("block_size"))
    n, ch, h, w = x.shape
    return x.reshape(n, b, b, ch // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, ch // (b * b), h * b, w * b)


@register_op("space_to_depth", moves_values=True)
def _space_to_depth(c):
    x, b = c.t("x"), int(c.p("block_size"))
    n, ch, h, w = x.shape
    return x.reshape(n, ch, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, ch * b * b, h // b, w // b)


@register_op("pixel_shuffle", moves_values=True)
def _pixel_shuffle(c):
    return F.pixel_shuffle(c.t("x"), int(c.p("upscale_factor")))


@register_op("pixel_unshuffle", moves_values=True)  # iOS16
def _pixel_unshuffle(c):
    return F.pixel_unshuffle(c.t("x"), int(c.p("downscale_factor")))
