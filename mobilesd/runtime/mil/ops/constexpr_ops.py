"""Weight decompression, the constexpr ops (coremltools ``ops/defs/iOS16/constexpr_ops.py`` and
``ops/defs/iOS18/compression.py``).

Each handler hands the op's inputs, as numpy in their declared dtypes (``c.array``: the stored array, or the
value an upstream constexpr made, e.g. a LUT that constexpr_blockwise_shift_scale scaled), to the static
``decompress`` of coremltools' own definition of the op, so the weights are the ones coremltools'
``decompress_weights`` materialises. Written here instead, each with its reason: the iOS18 LUT lookup (used
by ``constexpr_lut_to_dense`` and ``constexpr_lut_to_sparse``) and ``constexpr_cast``.
"""

from __future__ import annotations

import functools

import numpy as np

from ..program import silence_coremltools
from ._utils import axis
from .registry import register_op


@functools.cache
def _defs():
    """coremltools' op definitions by opset: (iOS16, iOS18); imported on first use (coremltools is slow to
    import and noisy on Linux)."""
    silence_coremltools()
    from coremltools.converters.mil.mil.ops.defs import iOS16, iOS18

    return iOS16, iOS18


def _offset(c):
    return c.array("offset") if c.has("offset") else None


@register_op("constexpr_affine_dequantize")  # iOS16
def _affine_dequantize(c):
    ios16, _ = _defs()
    return ios16.constexpr_affine_dequantize.decompress(
        c.array("quantized_data"), c.array("zero_point"), c.array("scale"), int(c.p("axis")))


@register_op("constexpr_blockwise_shift_scale")  # iOS18
def _blockwise_shift_scale(c):
    _, ios18 = _defs()
    return ios18.constexpr_blockwise_shift_scale.decompress(c.array("data"), c.array("scale"), _offset(c))


def lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    """iOS18 constexpr_lut_to_dense: ``lut`` [*blocks, n_palettes, vector_size] holds one palette per block of
    ``indices``; the same result as coremltools' ``optimize._utils.lut_to_dense`` (which its decompress calls).

    Not that one because it first repeats the LUT to one copy per element (``repeat_data_as(lut,
    indices.shape)``): elements x palettes x vector_size values, 3.8 GB for one 6-bit-palettized
    2560x1280x3x3 SD1.5 conv weight in fp16 (15 GB at 8 bits). This looks each index up in its block's palette
    instead: memory is the output plus an int32 row number per element."""
    k = indices.ndim
    blocks, n_pal, vsize = lut.shape[:k], lut.shape[k], lut.shape[k + 1]
    itype = np.int32 if lut.size < 2 ** 31 else np.int64
    row = np.zeros(indices.shape, dtype=itype)  # the block each element is in, row-major over blocks
    for d in range(k):
        shape = [1] * k
        shape[d] = -1
        row *= blocks[d]
        row += (np.arange(indices.shape[d], dtype=itype) // (indices.shape[d] // blocks[d])).reshape(shape)
    row *= n_pal
    row += indices  # now the LUT row of each element's palette entry
    vals = lut.reshape(-1, vsize)[row]  # [*indices.shape, vsize]
    if vsize == 1:
        return vals[..., 0]
    ax = axis(int(vector_axis), k)
    out_shape = list(indices.shape)
    out_shape[ax] *= vsize
    return np.moveaxis(vals, -1, ax + 1).reshape(out_shape)


@register_op("constexpr_lut_to_dense")
def _lut_to_dense(c):
    if c.has("shape"):  # iOS16: indices packed LSB-first into uint8, a flat LUT, an explicit shape
        ios16, _ = _defs()
        return ios16.constexpr_lut_to_dense.decompress(c.array("lut"), c.array("indices"), c.array("shape"))
    return lut_to_dense(c.array("indices"), c.array("lut"), c.p("vector_axis", None))


@register_op("constexpr_sparse_to_dense")
def _sparse_to_dense(c):
    ios16, ios18 = _defs()
    if c.has("shape"):  # iOS16: a bit mask packed LSB-first into uint8, an explicit shape
        return ios16.constexpr_sparse_to_dense.decompress(c.array("nonzero_data"), c.array("mask"), c.array("shape"))
    return ios18.constexpr_sparse_to_dense.decompress(c.array("nonzero_data"), c.array("mask"))


@register_op("constexpr_lut_to_sparse")  # iOS18
def _lut_to_sparse(c):
    # coremltools' decompress step by step, with the LUT lookup above in place of its lut_to_dense (memory)
    _, ios18 = _defs()
    mask, lut, vector_axis = c.array("indices_mask"), c.array("lut"), c.p("vector_axis", None)
    indices = ios18.constexpr_sparse_to_dense.decompress(c.array("indices_nonzero_data"), mask)
    dense = lut_to_dense(indices, lut, vector_axis)
    if vector_axis is not None:
        mask = np.repeat(mask, lut.shape[-1], axis=int(vector_axis))
    return mask, dense[mask != 0].flatten()


@register_op("constexpr_sparse_blockwise_shift_scale")  # iOS18
def _sparse_blockwise_shift_scale(c):
    _, ios18 = _defs()
    return ios18.constexpr_sparse_blockwise_shift_scale.decompress(
        c.array("data_mask"), c.array("nonzero_data"), c.array("scale"), _offset(c))


@register_op("constexpr_cast")
def _constexpr_cast(c):
    # coremltools defines no decompress for it; this is its materialized_val_inference, np.float32(source_val)
    return c.array("source_val").astype(np.float32)
