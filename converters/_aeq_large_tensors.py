"""Work around ai-edge-quantizer 0.10.0 failing on weights over 32 MiB with per-channel scales.

Its ``uniform_quantize`` has a memory-saving path for tensors over 32 MiB that flattens the tensor to
[-1, last_dim] and broadcasts the per-channel scales to that shape. That only works when the channel
axis is the last one; SD's 1280x3x3x1280 convs are quantized along axis 0, so the broadcast fails
(the "axis remapping" error) on every one of them.

The fix keeps the library's own arithmetic: such a tensor is cut along its channel axis into slices
under 32 MiB, each slice goes through the same ``uniform_quantize`` with its slice of scales and zero
points, and the results are concatenated. Bit-identical to what the unchunked path would compute
(tests/test_converters.py checks that on a 1280x3x3x1280 conv). Applied only while we quantize, and only
on the version whose bug it targets.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

_LIMIT = 32 * 1024 * 1024
BROKEN_VERSIONS = {"0.10.0"}


def _needs_slicing(tensor: np.ndarray, params) -> bool:
    scale = np.asarray(params.scale)
    return (tensor.ndim > 1 and tensor.nbytes > _LIMIT and scale.size > 1
            and getattr(params, "block_size", 0) in (0, None)
            and params.quantized_dimension is not None
            and params.quantized_dimension != tensor.ndim - 1)


@contextlib.contextmanager
def large_tensor_fix():
    from importlib.metadata import version

    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as uqt

    if version("ai-edge-quantizer") not in BROKEN_VERSIONS:
        yield
        return
    original = uqt.uniform_quantize

    def sliced(tensor_data, quantization_params, is_blockwise_quant=False):
        if is_blockwise_quant or not _needs_slicing(tensor_data, quantization_params):
            return original(tensor_data, quantization_params, is_blockwise_quant)
        axis = quantization_params.quantized_dimension
        n = tensor_data.shape[axis]
        per_channel = tensor_data.nbytes // n
        step = max(1, (_LIMIT // 2) // max(per_channel, 1))
        scale = np.asarray(quantization_params.scale)
        zp = np.asarray(quantization_params.zero_point)
        parts = []
        for start in range(0, n, step):
            idx = slice(start, min(n, start + step))
            sub_params = dataclasses.replace(
                quantization_params,
                scale=_take(scale, idx, axis, n),
                zero_point=_take(zp, idx, axis, n),
            )
            parts.append(original(np.ascontiguousarray(_slice_axis(tensor_data, idx, axis)), sub_params))
        return np.concatenate(parts, axis=axis)

    patched_modules = [uqt]
    # modules that imported the function by name keep their own reference: patch those too
    import sys

    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, "__name__", "").startswith("ai_edge_quantizer") \
                and getattr(mod, "uniform_quantize", None) is original:
            patched_modules.append(mod)
    for mod in patched_modules:
        mod.uniform_quantize = sliced
    try:
        yield
    finally:
        for mod in patched_modules:
            mod.uniform_quantize = original


def _slice_axis(a: np.ndarray, idx: slice, axis: int) -> np.ndarray:
    key = [slice(None)] * a.ndim
    key[axis] = idx
    return a[tuple(key)]


def _take(p: np.ndarray, idx: slice, axis: int, n: int) -> np.ndarray:
    """Slice a scale / zero-point array that is either flat [n] or rank-expanded with n on ``axis``."""
    if p.ndim == 1:
        return p[idx] if p.shape[0] == n else p
    if p.ndim > axis and p.shape[axis] == n:
        return _slice_axis(p, idx, axis)
    return p
