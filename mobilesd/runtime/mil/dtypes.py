"""How MIL values are held while the interpreter runs, and the conversions in and out.

Floats are held as fp32 (an fp16 value rounded to fp16: the fp16 emulation), ints as int32 (int64 where
uint32/int64 need it), bools as bool. Results go back to numpy as float32 for every float dtype.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT = frozenset({"fp16", "fp32", "fp64"})
_NP_OUT = {"fp16": np.float32, "fp32": np.float32, "fp64": np.float32, "bool": np.bool_, "int8": np.int8,
           "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
           "int64": np.int64}


def dtype_name(dtype) -> str:
    """A pymil builtin type's MIL name: ``fp16``, ``int32``, ``uint4``, ``bool``..."""
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(dtype)


def numpy_dtype(dtype) -> np.dtype:
    """The numpy dtype coremltools stores a pymil builtin type in (sub-byte ints as int8 / uint8)."""
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(dtype))


def storage(dname: str) -> torch.dtype:
    """How a value of MIL dtype ``dname`` is held: floats as fp32 (fp16 rounded), ints as int32/64, bool."""
    if dname in FLOAT:
        return torch.float32
    if dname == "bool":
        return torch.bool
    if dname in ("int64", "uint32"):
        return torch.int64
    return torch.int32


def round_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def to_torch(val, dname: str | None = None) -> torch.Tensor:
    """A numpy value (a const's, an input's) as a tensor held the interpreter's way."""
    arr = np.asarray(val)
    if arr.dtype == np.float16 or arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "ui" and arr.dtype not in (np.int32, np.int64):
        arr = arr.astype(np.int64 if arr.dtype == np.uint32 else np.int32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dname is not None and t.dtype != storage(dname):
        t = t.to(storage(dname))
    return t


def to_numpy(t: torch.Tensor, dname: str) -> np.ndarray:
    """A held value as the numpy a caller gets back (float32 for every float dtype)."""
    arr = t.detach().cpu().numpy()
    want = _NP_OUT.get(dname)
    if want is not None and arr.dtype != want:
        arr = arr.astype(want)
    return arr
