"""Corrupting converted graphs the way a broken conversion would, for the verification negative controls.

Each function edits a graph file in place: the largest weight tensor is set to zero. They read the formats
with their own libraries (the TFLite flatbuffer schema shipped with ai-edge-litert, onnx, Core ML's weight.bin
blob layout), so the graph stays loadable and only its numbers are wrong.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def zero_largest_weight(path: Path) -> str:
    """Zero the largest weight tensor of a .tflite / .onnx / .mlpackage graph; returns what was zeroed."""
    path = Path(path)
    if path.suffix == ".tflite":
        return _zero_tflite(path)
    if path.suffix == ".onnx":
        return _zero_onnx(path)
    if path.suffix == ".mlpackage":
        return _zero_mlpackage(path)
    raise ValueError(path)


def _zero_tflite(path: Path) -> str:
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(path.read_bytes())
    model = schema.Model.GetRootAsModel(data, 0)
    best = max(range(model.BuffersLength()), key=lambda i: model.Buffers(i).DataLength())
    blob = model.Buffers(best).DataAsNumpy().tobytes()
    pos = bytes(data).find(blob)
    assert pos > 0 and len(blob) > 64, "no weight buffer found"
    data[pos:pos + len(blob)] = bytes(len(blob))
    path.write_bytes(bytes(data))
    return f"buffer {best} ({len(blob)} bytes)"


def _zero_onnx(path: Path) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.dims else 0)
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
    onnx.save(model, str(path))
    return f"initializer {init.name} {list(arr.shape)}"


def _zero_mlpackage(path: Path) -> str:
    """weight.bin: a 64-byte file header, then blobs, each behind a 64-byte metadata record (sentinel
    0xDEADBEEF, dtype, size in bytes, data offset), 64-byte aligned."""
    wfile = next(path.glob("Data/com.apple.CoreML/weights/weight.bin"))
    data = bytearray(wfile.read_bytes())
    blobs, pos = [], 64
    while pos + 64 <= len(data):
        sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, pos)
        if sentinel != 0xDEADBEEF:
            break
        blobs.append((size, offset))
        pos = (offset + size + 63) // 64 * 64
    size, offset = max(blobs)
    data[offset:offset + size] = bytes(size)
    wfile.write_bytes(bytes(data))
    return f"weight blob at {offset} ({size} bytes)"
