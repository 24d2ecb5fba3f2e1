"""gather / scatter ops (coremltools ``ops/defs/iOS15..iOS17/scatter_gather.py``). Negative indices wrap
(iOS16 semantics; iOS17 calls them out of range, undefined)."""

from __future__ import annotations

import numpy as np
import torch

from ._utils import axis
from .registry import register_op


def _fix_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + n, idx)


def _gather(x, idx, ax, batch_dims):
    if batch_dims == 0:
        i = _fix_index(idx, x.shape[ax])
        out = x.index_select(ax, i.reshape(-1))
        return out.reshape(tuple(x.shape[:ax]) + tuple(idx.shape) + tuple(x.shape[ax + 1:]))
    lead = tuple(x.shape[:batch_dims])
    nb = int(np.prod(lead, dtype=np.int64))
    xb, ib = x.reshape((nb,) + tuple(x.shape[batch_dims:])), idx.reshape((nb,) + tuple(idx.shape[batch_dims:]))
    outs = [_gather(xb[i], ib[i], ax - batch_dims, 0) for i in range(nb)]
    return torch.stack(outs).reshape(lead + tuple(outs[0].shape))


@register_op("gather", moves_values=True)
def _gather_op(c):
    x = c.t("x")
    return _gather(x, c.t("indices"), axis(int(c.p("axis", 0)), x.ndim), int(c.p("batch_dims", 0)))


@register_op("gather_along_axis", moves_values=True)
def _gather_along_axis(c):
    x = c.t("x")
    ax = axis(int(c.p("axis", 0)), x.ndim)
    return torch.gather(x, ax, _fix_index(c.t("indices"), x.shape[ax]))


def _gather_nd(x, idx, batch_dims):
    if batch_dims == 0:
        k = idx.shape[-1]
        cols = tuple(_fix_index(idx[..., j], x.shape[j]) for j in range(k))
        return x[cols]
    lead = tuple(x.shape[:batch_dims])
    nb = int(np.prod(lead, dtype=np.int64))
    xb, ib = x.reshape((nb,) + tuple(x.shape[batch_dims:])), idx.reshape((nb,) + tuple(idx.shape[batch_dims:]))
    outs = [_gather_nd(xb[i], ib[i], 0) for i in range(nb)]
    return torch.stack(outs).reshape(lead + tuple(outs[0].shape))


@register_op("gather_nd", moves_values=True)
def _gather_nd_op(c):
    return _gather_nd(c.t("x"), c.t("indices"), int(c.p("batch_dims", 0)))


def _scatter_into(data, idx_tuple, upd, mode):
    """data[idx] (mode)= upd, for an advanced-index tuple (leading dims of data); duplicates accumulate."""
    if mode == "update":
        data[idx_tuple] = upd
        return data
    if mode in ("add", "sub"):
        data.index_put_(idx_tuple, upd if mode == "add" else -upd, accumulate=True)
        return data
    idx_tuple = torch.broadcast_tensors(*idx_tuple)
    rest = tuple(data.shape[len(idx_tuple):])
    flat = [t.reshape(-1) for t in idx_tuple]
    u = upd.expand(tuple(idx_tuple[0].shape) + rest).reshape((-1,) + rest)
    for j in range(flat[0].numel()):
        pos = tuple(int(t[j]) for t in flat)
        cur = data[pos]
        if mode == "mul":
            new = cur * u[j]
        elif mode == "div":
            new = cur / u[j]
        elif mode == "max":
            new = torch.maximum(cur, u[j])
        elif mode == "min":
            new = torch.minimum(cur, u[j])
        else:
            raise ValueError(f"scatter mode {mode}")
        data[pos] = new
    return data


@register_op("scatter")
def _scatter(c):
    data = c.t("data").clone()
    ax = axis(int(c.p("axis", 0)), data.ndim)
    idx = _fix_index(c.t("indices"), data.shape[ax])
    upd = c.t("updates").to(data.dtype)
    # updates: data.shape[:axis] + indices.shape + data.shape[axis+1:]
    d = data.movedim(ax, 0)
    u = upd.movedim(list(range(ax, ax + idx.ndim)), list(range(idx.ndim)))
    u = u.reshape((idx.numel(),) + tuple(d.shape[1:]))
    d2 = _scatter_into(d.clone(), (idx.reshape(-1),), u, c.p("mode", "add"))
    return d2.movedim(0, ax)


@register_op("scatter_along_axis")
def _scatter_along_axis(c):
    data = c.t("data").clone()
    ax = axis(int(c.p("axis", 0)), data.ndim)
    idx = _fix_index(c.t("indices"), data.shape[ax])
    upd = c.t("updates").to(data.dtype)
    grids = list(torch.meshgrid(*[torch.arange(n) for n in idx.shape], indexing="ij"))
    grids[ax] = idx
    return _scatter_into(data, tuple(grids), upd, c.p("mode", "add"))


@register_op("scatter_nd")
def _scatter_nd(c):
    data = c.t("data").clone()
    idx = c.t("indices").long()
    k = idx.shape[-1]
    cols = tuple(_fix_index(idx[..., j], data.shape[j]) for j in range(k))
    return _scatter_into(data, cols, c.t("updates").to(data.dtype), c.p("mode", "add"))
