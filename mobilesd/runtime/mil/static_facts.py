"""static_facts: what a Core ML package holds, read without running it (op counts, compute precision,
weight bytes as stored by kind, functions, Neural Engine caveats from published heuristics).

A package is read from its protobuf alone (no weight loaded: 0.9 s for an SD1.5 UNet); a pymil Program is
walked instead, with the same results.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError

from .dtypes import FLOAT, dtype_name
from .program import is_constexpr, silence_coremltools, walk_ops

__all__ = ["static_facts"]

_ANE_SOURCE = ("heuristics, not Apple documentation: hollance/neural-engine docs/unsupported-layers.md "
               "(gather, dilated convolutions, RNN layers, custom layers fall back); coremltools 'Typed "
               "Execution' guide (fp32-typed ML programs run on GPU/CPU only); apple/ml-stable-diffusion "
               "(SPLIT_EINSUM attention for the Neural Engine, ORIGINAL for CPU+GPU)")
_ANE_FALLBACK_OPS = {
    "gather": "gather (embedding lookups) is reported to fall back to CPU/GPU",
    "gather_nd": "gather-type ops are reported to fall back", "gather_along_axis": "gather-type ops are reported to fall back",
    "scatter": "scatter ops fall back", "scatter_nd": "scatter ops fall back", "scatter_along_axis": "scatter ops fall back",
    "lstm": "RNN layers run on CPU", "gru": "RNN layers run on CPU", "rnn": "RNN layers run on CPU",
    "while_loop": "control flow is CPU-only", "cond": "control flow is CPU-only",
    "non_zero": "data-dependent shapes are CPU-only", "non_maximum_suppression": "CPU-only",
    "random_normal": "random ops are CPU-only", "random_uniform": "random ops are CPU-only",
    "random_bernoulli": "random ops are CPU-only", "random_categorical": "random ops are CPU-only",
    "topk": "sorting ops are reported to fall back", "argsort": "sorting ops are reported to fall back",
}


def _var_bytes(var) -> int:
    val = var.val
    if val is None or isinstance(val, str):
        return 0
    arr = np.asarray(val)
    if arr.dtype.kind in "US":
        return 0
    bits = getattr(var.dtype, "get_bitwidth", lambda: arr.dtype.itemsize * 8)()
    return math.ceil(arr.size * bits / 8)


class _Payload:
    """A value stored in the package (a const's val, or a constexpr input given inline)."""

    __slots__ = ("dtype", "nbytes", "rank")

    def __init__(self, dtype: str, rank: int, nbytes: int):
        self.dtype, self.rank, self.nbytes = dtype, rank, nbytes


class _OpView:
    """One op, as static_facts needs it, from either a pymil op or a milproto op."""

    __slots__ = ("dilations", "inputs", "outputs", "payload", "type")

    def __init__(self, type_: str, outputs: list, inputs: dict, payload: _Payload | None = None,
                 dilations: list[int] | None = None):
        self.type, self.outputs, self.inputs = type_, outputs, inputs   # outputs: [(name, dtype, shape)]
        self.payload, self.dilations = payload, dilations                # inputs: {param: [name | _Payload]}


def _bits(dtype: str) -> int:
    if dtype in ("bool",):
        return 8
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 0


def _views_from_program(prog, fname: str) -> list[_OpView]:
    views = []
    for op in walk_ops(prog.functions[fname]):
        outs = [(str(id(v)), dtype_name(v.dtype), tuple(v.shape or ())) for v in op.outputs]
        ins = {}
        for k, v in op.inputs.items():
            vs = v if isinstance(v, (list, tuple)) else [v]
            ins[k] = [str(id(x)) for x in vs if x is not None]
        payload = dil = None
        if op.op_type == "const":
            var = op.outputs[0]
            payload = _Payload(dtype_name(var.dtype), len(var.shape or ()), _var_bytes(var))
        if op.op_type == "conv" and op.inputs.get("dilations") is not None and op.dilations.val is not None:
            dil = [int(d) for d in np.ravel(op.dilations.val)]
        views.append(_OpView(op.op_type, outs, ins, payload, dil))
    return views


def _proto_dtype(tensor_type) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(tensor_type.dataType).lower()
    return {"float16": "fp16", "float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "string": "str"}.get(name, name)


def _proto_type(value_type):
    """(dtype, shape) of a milproto ValueType (tensors only; others give ("", ()))."""
    if value_type.WhichOneof("type") != "tensorType":
        return "", ()
    tt = value_type.tensorType
    shape = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
    return _proto_dtype(tt), shape


def _proto_payload(value) -> _Payload:
    dtype, shape = _proto_type(value.type)
    if dtype in ("str", ""):
        return _Payload(dtype, len(shape), 0)
    n = int(np.prod([d or 0 for d in shape], dtype=np.int64)) if shape else 1
    return _Payload(dtype, len(shape), math.ceil(n * _bits(dtype) / 8))


def _views_from_spec(spec, fname: str) -> list[_OpView]:
    """The same views straight from the package's protobuf: no weight is read (fast on a 1.7 GB UNet)."""
    func = spec.mlProgram.functions[fname]
    views, consts = [], {}

    def walk(block):
        for op in block.operations:
            outs = [(o.name, *_proto_type(o.type)) for o in op.outputs]
            ins = {}
            for k, arg in op.inputs.items():
                ins[k] = [b.name if b.WhichOneof("binding") == "name" else _proto_payload(b.value) for b in arg.arguments]
            if is_constexpr(op.type):  # iOS16 constexpr ops hold their data as attributes, not inputs
                for k, val in op.attributes.items():
                    if k != "name":
                        ins[k] = [_proto_payload(val)]
            payload = dil = None
            if op.type == "const" and "val" in op.attributes:
                payload = _proto_payload(op.attributes["val"])
                val = op.attributes["val"]
                if val.WhichOneof("value") == "immediateValue" and val.immediateValue.WhichOneof("value") == "tensor":
                    consts[op.outputs[0].name] = val.immediateValue.tensor
            views.append(_OpView(op.type, outs, ins, payload, dil))
            for b in op.blocks:
                walk(b)

    walk(func.block_specializations[func.opset])
    for v in views:  # conv dilations: read from their const's immediate value
        if v.type == "conv" and v.inputs.get("dilations"):
            ref = v.inputs["dilations"][0]
            t = consts.get(ref) if isinstance(ref, str) else None
            if t is not None and t.WhichOneof("value") == "ints":
                v.dilations = list(t.ints.values)
    return views


_KIND_RANK = {"lut": 0, "sparse": 1, "int4": 2, "int8": 3, "float16": 4, "float32": 5}


def _own_kind(v: _OpView, producer: dict) -> str:
    t = v.type
    if "lut" in t:
        return "lut"
    if "sparse" in t:
        return "sparse"
    if t == "constexpr_cast":
        return "float16"
    key = {"constexpr_affine_dequantize": "quantized_data", "constexpr_blockwise_shift_scale": "data"}.get(t)
    ref = v.inputs.get(key, [None])[0] if key else None
    if isinstance(ref, _Payload):
        d = ref.dtype
    elif isinstance(ref, str) and ref in producer:
        d = next(o[1] for o in producer[ref].outputs if o[0] == ref)
    else:
        return t
    return {"fp16": "float16", "fp32": "float32"}.get(d, d.replace("u", ""))


def _facts(views: list[_OpView], facts: dict) -> None:
    """Add one function's ops to the running ``facts`` accumulators."""
    producer = {o[0]: v for v in views for o in v.outputs}
    consumers: dict[str, list[_OpView]] = {}
    for v in views:
        for refs in v.inputs.values():
            for r in refs:
                if isinstance(r, str):
                    consumers.setdefault(r, []).append(v)
    # constexpr chains (e.g. a LUT scaled by a blockwise op, lut_to_sparse -> sparse_to_dense) count as one
    # weight, of the most compressed kind in the chain
    parent: dict[int, int] = {}

    def root(i):
        while parent.get(i, i) != i:
            i = parent[i]
        return i
    cx = [v for v in views if is_constexpr(v.type)]
    for v in cx:
        for refs in v.inputs.values():
            for r in refs:
                if isinstance(r, str) and r in producer and is_constexpr(producer[r].type):
                    parent[root(id(v))] = root(id(producer[r]))
    chain_kind: dict[int, str] = {}
    for v in cx:
        k, r = _own_kind(v, producer), root(id(v))
        if r not in chain_kind or _KIND_RANK.get(k, 9) < _KIND_RANK.get(chain_kind[r], 9):
            chain_kind[r] = k
    for v in views:
        t = v.type
        facts["op_counts"][t] += 1
        if t == "const":
            users = consumers.get(v.outputs[0][0], [])
            p = v.payload
            if p is None or (users and all(is_constexpr(u.type) for u in users)):
                continue  # counted with its constexpr
            if p.dtype in FLOAT and p.rank >= 1:
                facts["by_kind"][{"fp16": "float16", "fp32": "float32"}.get(p.dtype, p.dtype)] += p.nbytes
            continue
        if is_constexpr(t):
            n = 0
            for refs in v.inputs.values():
                for r in refs:
                    if isinstance(r, _Payload):
                        n += r.nbytes
                    elif r in producer and producer[r].type == "const" and producer[r].payload is not None:
                        n += producer[r].payload.nbytes
            facts["by_kind"][chain_kind[root(id(v))]] += n
            continue
        for _, d, shape in v.outputs:
            if t != "cast" and d in FLOAT:
                facts["float_types"].add(d)
                if d != "fp16":
                    facts["fp32_ops"][t] += 1
            for s in shape:
                if isinstance(s, (int, np.integer)) and s > 16384:
                    facts["big_dims"].add(int(s))
        if t in _ANE_FALLBACK_OPS:
            facts["ane_ops"][t] += 1
        if t == "conv" and v.dilations and any(d > 1 for d in v.dilations):
            facts["ane_ops"]["conv(dilated)"] += 1


def static_facts(path_or_program, function: str | None = None) -> dict:
    """What a package holds, without running it: op counts, compute precision, weight bytes (as stored,
    by kind), its functions, and Neural Engine caveats from published heuristics.

    A path is read from its protobuf alone (no weights loaded); a pymil Program is walked as it is."""
    from coremltools.converters.mil.mil import Program

    if isinstance(path_or_program, Program):
        prog, spec = path_or_program, None
        functions = list(prog.functions)
    else:
        silence_coremltools()
        import coremltools as ct

        if isinstance(path_or_program, ct.models.MLModel):
            spec = path_or_program.get_spec()
        else:
            p = Path(path_or_program)
            if not p.exists():
                raise MobileSDError(f"{p}: no such Core ML package", "pass the path of a .mlpackage (a folder)")
            spec = ct.models.MLModel(str(p), skip_model_load=True).get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise MobileSDError(f"{path_or_program}: a neural-network Core ML model, not an ML program",
                                "convert with convert_to='mlprogram'")
        functions = list(spec.mlProgram.functions)
    acc = {"op_counts": Counter(), "by_kind": Counter({"float16": 0, "int8": 0, "lut": 0}),
           "float_types": set(), "fp32_ops": Counter(), "ane_ops": Counter(), "big_dims": set()}
    for fname in ([function] if function else functions):
        _facts(_views_from_program(prog, fname) if spec is None else _views_from_spec(spec, fname), acc)
    float_types, fp32_ops, ane_ops = acc["float_types"], acc["fp32_ops"], acc["ane_ops"]
    op_counts = acc["op_counts"]
    notes: list[str] = []
    if ane_ops.get("conv(dilated)"):
        notes.append(f"{ane_ops['conv(dilated)']} dilated convolution(s): reported not to run on the Neural Engine")
    for t, why in _ANE_FALLBACK_OPS.items():
        if ane_ops.get(t):
            notes.append(f"{ane_ops[t]} {t}: {why}")
    if float_types == {"fp32"}:
        notes.append("fp32-typed compute: the Neural Engine computes in fp16 only, so an fp32 model runs on "
                     "GPU/CPU (convert with compute_precision=FLOAT16 for the Neural Engine)")
    elif fp32_ops:
        listed = ", ".join(f"{k} x{n}" for k, n in sorted(fp32_ops.items()))
        notes.append(f"{sum(fp32_ops.values())} op(s) compute in fp32 ({listed}): the Neural Engine computes in "
                     "fp16 only, so these run on GPU/CPU")
    if acc["big_dims"]:
        notes.append(f"tensor dimension(s) {sorted(acc['big_dims'])} over 16384: reported to keep layers off the "
                     "Neural Engine")
    if op_counts.get("matmul", 0) and op_counts.get("softmax", 0) and not op_counts.get("einsum", 0):
        notes.append("attention as matmul+softmax on (B, heads, L, D) tensors: Apple's Neural Engine layout "
                     "advice (ml-stable-diffusion SPLIT_EINSUM) splits heads and uses einsum on (B, C, 1, L)")
    if float_types == {"fp16"}:
        precision = "float16"
    elif float_types <= {"fp32"}:
        precision = "float32"
    else:
        precision = "mixed"
    by_kind = acc["by_kind"]
    return {
        "op_counts": dict(sorted(op_counts.items())),
        "compute_precision": precision,
        "weight_bytes": int(sum(by_kind.values())),
        "weight_bytes_by_kind": {k: int(v) for k, v in sorted(by_kind.items())},
        "functions": functions,
        "neural_engine": {"unsupported_ops": dict(sorted(ane_ops.items())), "notes": notes, "source": _ANE_SOURCE},
    }
