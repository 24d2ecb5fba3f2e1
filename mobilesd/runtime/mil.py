"""Verify Core ML packages on Linux: interpret an ML program's MIL op by op in PyTorch (CPU).

Core ML prediction only runs on macOS. This module loads the MIL program stored in an ``.mlpackage``
back into coremltools' pymil (``milproto.load``) and evaluates it op by op with torch, rounding every
value to its declared dtype (fp16 emulation: a ``tensor<fp16, ...>`` is computed in fp32 and rounded to
fp16 after each op), so a converted package can be checked against the source model without a Mac.

What it is: a reference evaluator following each op's definition in coremltools'
``converters/mil/mil/ops/defs/iOS15..iOS18`` docstrings. What it is not: a bit-exact model of any Core
ML backend (the Neural Engine, GPU and CPU each accumulate differently), so compare with a tolerance.

Public API: :func:`load_program`, :func:`interpret`, :class:`MILSession` (a ``GraphSession`` for
``open_graph``), :func:`static_facts`, :data:`SUPPORTED_OPS`, :class:`UnsupportedMILOp`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mobilesd.errors import MobileSDError
from mobilesd.runtime.graphs import GraphSession

__all__ = [
    "SUPPORTED_OPS",
    "MILInterpreter",
    "MILSession",
    "UnsupportedMILOp",
    "interpret",
    "load_program",
    "static_facts",
]


class UnsupportedMILOp(MobileSDError):
    """The program uses MIL op types this interpreter does not implement (raised before anything runs)."""

    def __init__(self, op_types: dict[str, int], where: str = "program"):
        self.op_types = dict(op_types)
        listed = ", ".join(f"{t} (x{n})" for t, n in sorted(self.op_types.items()))
        super().__init__(
            f"{where}: the MIL interpreter does not implement op type(s) {listed}",
            "implement them in mobilesd/runtime/mil.py (one handler each, with a test against the op's "
            "definition; see docs/mil-interpreter.md), or convert without them (another deployment target "
            "or model change), or verify this package with Core ML on macOS")


# ---- loading -----------------------------------------------------------------------------------------

def _silence_coremltools():
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def load_program(path):
    """The pymil ``Program`` stored in an ``.mlpackage`` (or an ML-program ``.mlmodel``, or an in-memory
    ``coremltools.models.MLModel``); a ``Program`` is returned unchanged."""
    _silence_coremltools()
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.converters.mil.mil import Program

    if isinstance(path, Program):
        return path
    if isinstance(path, ct.models.MLModel):
        model, where = path, "MLModel"
    else:
        p = Path(path)
        if not p.exists():
            raise MobileSDError(f"{p}: no such Core ML package", "pass the path of a .mlpackage (a folder)")
        if p.suffix not in (".mlpackage", ".mlmodel"):
            raise MobileSDError(f"{p.name}: not a Core ML model", "pass a .mlpackage (or an ML-program .mlmodel)")
        model, where = ct.models.MLModel(str(p), skip_model_load=True), str(p)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise MobileSDError(f"{where}: a neural-network Core ML model, not an ML program",
                            "convert with convert_to='mlprogram' (the interpreter reads MIL programs only)")
    weights_dir = getattr(model, "weights_dir", None) or ""
    try:
        prog = milproto_load(spec, spec.specificationVersion, weights_dir)
    except Exception as e:
        raise MobileSDError(f"{where}: coremltools could not read the MIL program back ({type(e).__name__}: {e})",
                            "re-save the package with coremltools 9 (the version this repo pins)") from e
    return prog


def _function(prog, function: str):
    if function in prog.functions:
        return prog.functions[function]
    if function == "main" and len(prog.functions) == 1:
        return next(iter(prog.functions.values()))
    raise MobileSDError(f"the program has no function {function!r} (it has {sorted(prog.functions)})",
                        "pass function= one of those names")


def _walk_ops(block):
    for op in block.operations:
        yield op
        for b in op.blocks:
            yield from _walk_ops(b)


# ---- dtypes ------------------------------------------------------------------------------------------

def _dtype_name(dtype) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(dtype)


_FLOAT = {"fp16", "fp32", "fp64"}
_NP_OUT = {"fp16": np.float32, "fp32": np.float32, "fp64": np.float32, "bool": np.bool_, "int8": np.int8,
           "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
           "int64": np.int64}


def _storage(dname: str) -> torch.dtype:
    """How a value of MIL dtype ``dname`` is held: floats as fp32 (fp16 rounded), ints as int32/64, bool."""
    if dname in _FLOAT:
        return torch.float32
    if dname == "bool":
        return torch.bool
    if dname in ("int64", "uint32"):
        return torch.int64
    return torch.int32


def _round_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _to_torch(val, dname: str | None = None) -> torch.Tensor:
    arr = np.asarray(val)
    if arr.dtype == np.float16 or arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "ui" and arr.dtype not in (np.int32, np.int64):
        arr = arr.astype(np.int64 if arr.dtype == np.uint32 else np.int32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dname is not None and t.dtype != _storage(dname):
        t = t.to(_storage(dname))
    return t


# ---- the interpreter ---------------------------------------------------------------------------------

_CONSTANT_OPS = ("const",)
# ops whose outputs are some of their inputs' values, moved: exact in fp16 when their inputs are fp16
_VALUE_PRESERVING = frozenset({
    "reshape", "reshape_like", "transpose", "expand_dims", "squeeze", "flatten2d", "slice_by_index",
    "slice_by_size", "split", "concat", "stack", "gather", "gather_nd", "gather_along_axis", "tile", "identity",
    "crop", "reverse", "reverse_sequence", "sliding_windows", "depth_to_space", "space_to_depth", "pixel_shuffle",
    "pixel_unshuffle", "upsample_nearest_neighbor", "resize_nearest_neighbor", "maximum", "minimum", "relu",
    "select", "slice_update", "reduce_max", "reduce_min", "max_pool"})


def _is_constexpr(op_type: str) -> bool:
    return op_type.startswith("constexpr_")


class _Ctx:
    """What a handler sees: typed access to one op's inputs."""

    __slots__ = ("op", "run", "seen")

    def __init__(self, run: _Run, op):
        self.run, self.op = run, op
        self.seen: list[int] = []  # storage of every tensor handed to the handler (outputs may alias them)

    def has(self, name: str) -> bool:
        return self.op.inputs.get(name) is not None

    def t(self, name: str) -> torch.Tensor:
        """Input ``name`` as a tensor (floats as fp32)."""
        v = self.run.value(self.op.inputs[name])
        self.seen.append(v.untyped_storage().data_ptr())
        return v

    def ts(self, name: str) -> list[torch.Tensor]:
        v = self.op.inputs[name]
        out = [self.run.value(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        self.seen.extend(t.untyped_storage().data_ptr() for t in out)
        return out

    def p(self, name: str, default: Any = None) -> Any:
        """Input ``name`` as a Python / numpy value (a parameter: axes, modes, epsilons...)."""
        var = self.op.inputs.get(name)
        if var is None:
            return default
        if isinstance(var, (list, tuple)):  # a tuple input (e.g. reshape_like's begins)
            return [self._value_of(v) for v in var]
        return self._value_of(var)

    def _value_of(self, var) -> Any:
        if var.val is not None:
            v = var.val
        else:
            v = self.run.value(var).numpy()
        if isinstance(v, np.ndarray) and v.ndim == 0 or isinstance(v, np.generic):
            v = v.item()
        return v

    def ints(self, name: str, default=None) -> list[int] | None:
        v = self.p(name, None)
        if v is None:
            return default
        return [int(a) for a in np.asarray(v).reshape(-1)]

    def dtype(self, name: str) -> str:
        return _dtype_name(self.op.inputs[name].dtype)

    def out_dtype(self, i: int = 0) -> str:
        return _dtype_name(self.op.outputs[i].dtype)

    def out_shape(self, i: int = 0) -> tuple:
        return tuple(self.op.outputs[i].shape)


class _Run:
    """State of one evaluation: values by var, freed after their last use."""

    def __init__(self, interp: MILInterpreter, inputs: dict[str, torch.Tensor]):
        self.interp = interp
        self.env: dict[int, torch.Tensor] = {}
        for name, var in interp.func.inputs.items():
            self.env[id(var)] = inputs[name]

    def value(self, var) -> torch.Tensor:
        key = id(var)
        v = self.env.get(key)
        if v is not None:
            return v
        op = var.op
        if op is None:
            raise KeyError(f"no value for {var.name}")
        if op.op_type in _CONSTANT_OPS or _is_constexpr(op.op_type):
            v = self.interp._constant(var, self)
            if key in self.interp._tracked:  # a running op reads it: keep it until its last use
                self.env[key] = v
            return v
        raise RuntimeError(f"MIL value {var.name} used before it was computed (op {op.op_type})")


class MILInterpreter:
    """Evaluates one function of a pymil Program. Reusable across runs (checks and plans once)."""

    def __init__(self, program, function: str = "main", *, fp16_emulation: bool = True,
                 cache_constants: bool = False, where: str | None = None):
        self.program = load_program(program)
        self.func = _function(self.program, function)
        self.fp16 = fp16_emulation
        self.cache_constants = cache_constants
        self._cache: dict[int, torch.Tensor] = {}
        self._dnames: dict[int, str] = {}
        self.where = where or (str(program) if isinstance(program, (str, Path)) else "program")
        self.ops = list(self.func.operations)
        unknown = Counter(op.op_type for op in _walk_ops(self.func) if op.op_type not in _HANDLERS)
        if unknown:
            raise UnsupportedMILOp(dict(unknown), self.where)
        # The ops that run (constants materialise lazily at their first use) and each value's last use.
        self.run_ops = [op for op in self.ops if not (op.op_type in _CONSTANT_OPS or _is_constexpr(op.op_type))]
        self.output_vars = list(self.func.outputs)
        keep = {id(v) for v in self.output_vars}
        last: dict[int, int] = {}
        for i, op in enumerate(self.run_ops):
            for var in _flat_inputs(op):
                last[id(var)] = i
        self._tracked = set(last) | keep
        # ops that only move fp16 values (exact in fp16): their outputs need no rounding
        self._exact = [op.op_type in _VALUE_PRESERVING and not ({_dtype_name(v.dtype) for v in (
            *_flat_inputs(op), *op.outputs)} & {"fp32", "fp64"}) for op in self.run_ops]
        self._free_after: list[list[int]] = [[] for _ in self.run_ops]
        for key, i in last.items():
            if key not in keep:
                self._free_after[i].append(key)
        self.input_names = list(self.func.inputs)
        self.output_names = [v.name for v in self.output_vars]

    # -- constants ---------------------------------------------------------------------------------
    def _constant(self, var, run: _Run) -> torch.Tensor:
        key = id(var)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.to(torch.float32) if cached.dtype == torch.float16 else cached
        op = var.op
        if op.op_type == "const":
            val = var.val
            if isinstance(val, str) or (isinstance(val, np.ndarray) and val.dtype.kind in "US"):
                raise RuntimeError(f"string const {var.name} used as a tensor")
            out = _to_torch(val, _dtype_name(var.dtype))
        else:
            ctx = _Ctx(run, op)
            outs = _HANDLERS[op.op_type](ctx)
            outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
            outs = [self._finalize(o, v, False, ctx.seen) for o, v in zip(outs, op.outputs)]
            out = outs[op.outputs.index(var)]
            if self.cache_constants:
                for o, v in zip(outs, op.outputs):
                    self._cache[id(v)] = o.to(torch.float16) if _dtype_name(v.dtype) == "fp16" else o
        return out

    def _finalize(self, value, var, exact: bool = False, seen=()) -> torch.Tensor:
        """``value`` cast to ``var``'s declared dtype and, for fp16, rounded (unless ``exact``: the op only
        moves fp16 values around). A fresh result is rounded in place (no second fp32 allocation)."""
        dname = self._dnames.get(id(var))
        if dname is None:
            dname = self._dnames[id(var)] = _dtype_name(var.dtype)
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value))
        want = _storage(dname)
        fresh = False
        if value.dtype != want:
            value, fresh = value.to(want), True
        if dname == "fp16" and self.fp16 and not exact:
            if not fresh:
                fresh = value._base is None and value.untyped_storage().data_ptr() not in seen
            if fresh and value.is_contiguous():
                value.copy_(value.to(torch.float16))
            else:
                value = _round_fp16(value)
        return value

    # -- running -----------------------------------------------------------------------------------
    def prepare_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise MobileSDError(f"{self.where}: missing inputs {missing} (the function takes {self.input_names})",
                                "pass every input by its Core ML name")
        out = {}
        for name, var in self.func.inputs.items():
            dname = _dtype_name(var.dtype)
            arr = np.asarray(inputs[name])
            shape = tuple(var.shape)
            if all(isinstance(d, (int, np.integer)) for d in shape) and arr.shape != shape:
                if arr.size == int(np.prod(shape, dtype=np.int64)):
                    arr = arr.reshape(shape)  # e.g. a scalar timestep for a [1] input
                else:
                    raise MobileSDError(f"{self.where}: input {name} has shape {arr.shape}, the model takes {shape}",
                                        "pass inputs of the shapes the package was converted with")
            t = _to_torch(arr.astype(np.float32) if dname in _FLOAT else arr, dname)
            if dname == "fp16" and self.fp16:
                t = _round_fp16(t)
            out[name] = t
        return out

    def run(self, inputs: dict[str, np.ndarray], progress: bool = False,
            profile: dict | None = None) -> dict[str, np.ndarray]:
        """Evaluate on ``inputs`` (by Core ML name); ``profile``: a dict to add {op type: [count, seconds]} to."""
        import time

        tinputs = self.prepare_inputs(inputs)
        run = _Run(self, tinputs)
        env = run.env
        ops = self.run_ops
        it = ops
        if progress:
            from tqdm import tqdm

            it = tqdm(ops, desc="MIL ops", unit="op", leave=False)
        with torch.inference_mode():
            for i, op in enumerate(it):
                handler = _HANDLERS[op.op_type]
                t0 = time.perf_counter() if profile is not None else 0.0
                ctx = _Ctx(run, op)
                try:
                    res = handler(ctx)
                except MobileSDError:
                    raise
                except Exception as e:
                    raise MobileSDError(
                        f"{self.where}: MIL op {op.name!r} ({op.op_type}) failed in the interpreter: "
                        f"{type(e).__name__}: {e}",
                        "this is an interpreter bug or an op variant it does not handle; report the op "
                        "(see docs/mil-interpreter.md)") from e
                outs = op.outputs
                exact = self._exact[i]
                if len(outs) == 1:
                    env[id(outs[0])] = self._finalize(res[0] if isinstance(res, (tuple, list)) else res, outs[0],
                                                      exact, ctx.seen)
                else:
                    for v, r in zip(outs, res):
                        env[id(v)] = self._finalize(r, v, exact, ctx.seen)
                for key in self._free_after[i]:
                    env.pop(key, None)
                if profile is not None:
                    entry = profile.setdefault(op.op_type, [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - t0
            result = {}
            for var in self.output_vars:
                val = run.value(var)
                result[var.name] = _to_numpy(val, _dtype_name(var.dtype))
        return result


def _flat_inputs(op):
    for v in op.inputs.values():
        if isinstance(v, (list, tuple)):
            yield from v
        elif v is not None:
            yield v


def _to_numpy(t: torch.Tensor, dname: str) -> np.ndarray:
    arr = t.detach().cpu().numpy()
    want = _NP_OUT.get(dname)
    if want is not None and arr.dtype != want:
        arr = arr.astype(want)
    return arr


# ---- public entry points ---------------------------------------------------------------------------

def interpret(path_or_program, inputs: dict[str, np.ndarray], *, fp16_emulation: bool = True,
              function: str = "main", progress: bool = False, threads: int | None = None) -> dict[str, np.ndarray]:
    """Evaluate ``function`` of a Core ML ML program on ``inputs`` (by Core ML input name).

    Returns every output of the function by its Core ML output name, as numpy (float32 for float outputs).
    ``fp16_emulation``: round every fp16-typed value to fp16 after each op (what an fp16 Core ML model
    computes); False evaluates the same program in fp32 throughout (weights stay as stored).
    Raises :class:`UnsupportedMILOp` before running anything if the program has ops it does not know.
    """
    interp = MILInterpreter(path_or_program, function, fp16_emulation=fp16_emulation)
    with _threads(threads):
        return interp.run(inputs, progress=progress)


class _threads:
    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)


class MILSession(GraphSession):
    """``open_graph`` for ``.mlpackage``: runs the package's MIL program with the interpreter.

    Inputs and outputs go by the manifest's names. ``name_map`` (manifest name -> Core ML name) renames
    where they differ; an output name the program lacks falls back to the function's output order.
    Decompressed weights are cached between runs (``cache_weights``).
    """

    def __init__(self, path, input_names: list[str], output_names: list[str], threads: int | None = None,
                 *, fp16_emulation: bool = True, function: str = "main",
                 name_map: dict[str, str] | None = None, cache_weights: bool = True):
        self.path = Path(path) if isinstance(path, (str, Path)) else None
        self.interp = MILInterpreter(path, function, fp16_emulation=fp16_emulation,
                                     cache_constants=cache_weights, where=str(path))
        self.threads = threads
        name_map = dict(name_map or {})
        self.input_names, self.output_names = list(input_names), list(output_names)
        graph_inputs = self.interp.input_names
        self._in = {}
        missing = []
        for n in self.input_names:
            g = name_map.get(n, n)
            if g in graph_inputs:
                self._in[n] = g
            else:
                missing.append(n)
        if missing:
            raise MobileSDError(f"{path}: graph has no inputs {missing} (it has {graph_inputs})",
                                "the bundle does not match its manifest; re-export it (or pass name_map)")
        graph_outputs = self.interp.output_names
        wanted = [name_map.get(n, n) for n in self.output_names]
        if all(w in graph_outputs for w in wanted):
            self._out = wanted
        elif len(wanted) == len(graph_outputs):
            # a name the program lacks (e.g. a chunk's "hidden" saved as "hidden_out", Core ML names being
            # unique) takes the function's output at the same position
            self._out = [w if w in graph_outputs else graph_outputs[i] for i, w in enumerate(wanted)]
        else:
            raise MobileSDError(f"{path}: graph outputs {graph_outputs} do not match the manifest's "
                                f"{self.output_names}", "the bundle does not match its manifest; re-export it")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {self._in[n]: inputs[n] for n in self.input_names}
        with _threads(self.threads):
            out = self.interp.run(feed)
        return [out[n] for n in self._out]


# ---- static facts ------------------------------------------------------------------------------------

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
    for op in _walk_ops(prog.functions[fname]):
        outs = [(str(id(v)), _dtype_name(v.dtype), tuple(v.shape or ())) for v in op.outputs]
        ins = {}
        for k, v in op.inputs.items():
            vs = v if isinstance(v, (list, tuple)) else [v]
            ins[k] = [str(id(x)) for x in vs if x is not None]
        payload = dil = None
        if op.op_type == "const":
            var = op.outputs[0]
            payload = _Payload(_dtype_name(var.dtype), len(var.shape or ()), _var_bytes(var))
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
            if _is_constexpr(op.type):  # iOS16 constexpr ops hold their data as attributes, not inputs
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
    cx = [v for v in views if _is_constexpr(v.type)]
    for v in cx:
        for refs in v.inputs.values():
            for r in refs:
                if isinstance(r, str) and r in producer and _is_constexpr(producer[r].type):
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
            if p is None or (users and all(_is_constexpr(u.type) for u in users)):
                continue  # counted with its constexpr
            if p.dtype in _FLOAT and p.rank >= 1:
                facts["by_kind"][{"fp16": "float16", "fp32": "float32"}.get(p.dtype, p.dtype)] += p.nbytes
            continue
        if _is_constexpr(t):
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
            if t != "cast" and d in _FLOAT:
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
        _silence_coremltools()
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


# ---- op handlers -------------------------------------------------------------------------------------
# Each takes a _Ctx and returns a tensor (or a tuple for multi-output ops), computed in fp32 for floats.
# The interpreter casts/rounds every result to the op's declared output dtype afterwards.

_HANDLERS: dict[str, Callable[[_Ctx], Any]] = {}


def _op(*names):
    def deco(fn):
        for n in names:
            _HANDLERS[n] = fn
        return fn
    return deco


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() else t.to(torch.float32)


# -- elementwise binary
_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "equal": torch.eq, "not_equal": torch.ne, "less": torch.lt, "less_equal": torch.le,
    "greater": torch.gt, "greater_equal": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}


def _binary(fn):
    return lambda c: fn(c.t("x"), c.t("y"))


for _n, _f in _BINARY.items():
    _HANDLERS[_n] = _binary(_f)


@_op("real_div")
def _real_div(c):
    return torch.div(_as_float(c.t("x")), _as_float(c.t("y")))


@_op("pow")
def _pow(c):
    return torch.pow(_as_float(c.t("x")), c.t("y"))


@_op("floor_div")
def _floor_div(c):
    return torch.div(c.t("x"), c.t("y"), rounding_mode="floor")


@_op("mod")
def _mod(c):
    return torch.remainder(c.t("x"), c.t("y"))


# -- elementwise unary
_UNARY = {
    "abs": torch.abs, "acos": torch.acos, "asin": torch.asin, "atan": torch.atan, "atanh": torch.atanh,
    "ceil": torch.ceil, "cos": torch.cos, "cosh": torch.cosh, "erf": torch.erf, "exp": torch.exp,
    "exp2": torch.exp2, "floor": torch.floor, "round": torch.round,  # torch.round: half to even (0.5 -> 0)
    "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh, "sqrt": torch.sqrt, "square": torch.square,
    "tan": torch.tan, "tanh": torch.tanh, "logical_not": torch.logical_not, "identity": lambda x: x,
    "relu": torch.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "softplus": F.softplus,
    "softsign": lambda x: x / (1 + x.abs()), "relu6": lambda x: x.clamp(0, 6),
}


def _unary(fn):
    return lambda c: fn(c.t("x"))


for _n, _f in _UNARY.items():
    _HANDLERS[_n] = _unary(_f)


@_op("inverse")
def _inverse(c):
    return 1.0 / (c.t("x") + c.p("epsilon", 1e-4))


@_op("log")
def _log(c):
    return torch.log(c.t("x") + c.p("epsilon", 1e-45))


@_op("rsqrt")
def _rsqrt(c):
    return torch.rsqrt(c.t("x") + c.p("epsilon", 1e-12))


@_op("clip")
def _clip(c):
    return torch.clamp(c.t("x"), c.p("alpha"), c.p("beta"))


@_op("threshold")
def _threshold(c):
    return torch.clamp(c.t("x"), min=c.p("alpha"))


@_op("cast")
def _cast(c):
    x = c.t("x")
    if c.out_dtype() == "bool":
        return x != 0
    return x  # the declared dtype is applied by the interpreter (float -> int truncates, like numpy astype)


# -- activations
@_op("gelu")
def _gelu(c):
    x, mode = c.t("x"), c.p("mode", "EXACT")
    if mode == "EXACT":  # 0.5 x (1 + erf(x / sqrt(2)))
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"gelu mode {mode}")


@_op("softmax")
def _softmax(c):
    return torch.softmax(c.t("x"), dim=c.p("axis", -1))


@_op("leaky_relu")
def _leaky_relu(c):
    x = c.t("x")
    return torch.where(x >= 0, x, c.p("alpha") * x)


@_op("elu")
def _elu(c):
    x = c.t("x")
    return torch.where(x > 0, x, c.p("alpha") * torch.expm1(x))


@_op("clamped_relu")
def _clamped_relu(c):
    x = c.t("x")
    return torch.clamp(torch.where(x >= 0, x, c.p("alpha") * x), max=c.p("beta"))


@_op("linear_activation")
def _linear_activation(c):
    return c.t("x") * c.p("alpha") + c.p("beta")


@_op("scaled_tanh")
def _scaled_tanh(c):
    return c.p("alpha") * torch.tanh(c.p("beta") * c.t("x"))


@_op("sigmoid_hard")
def _sigmoid_hard(c):
    return torch.clamp(c.p("alpha") * c.t("x") + c.p("beta"), 0, 1)


@_op("thresholded_relu")
def _thresholded_relu(c):
    x = c.t("x")
    return torch.where(x >= c.p("alpha"), x, torch.zeros_like(x))


def _per_channel(v: torch.Tensor, rank: int) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (rank - 2))


@_op("prelu")
def _prelu(c):
    x = c.t("x")
    a = _per_channel(c.t("alpha"), x.ndim)
    return torch.where(x > 0, x, a * x)


@_op("softplus_parametric")
def _softplus_parametric(c):
    x = c.t("x")
    a, b = _per_channel(c.t("alpha"), x.ndim), _per_channel(c.t("beta"), x.ndim)
    return a * F.softplus(b * x)


# -- linear algebra
@_op("linear")
def _linear(c):
    return F.linear(c.t("x"), c.t("weight"), c.t("bias") if c.has("bias") else None)


@_op("matmul")
def _matmul(c):
    x, y = _as_float(c.t("x")), _as_float(c.t("y"))
    if c.p("transpose_x", False) and x.ndim >= 2:
        x = x.transpose(-1, -2)
    if c.p("transpose_y", False) and y.ndim >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@_op("einsum")
def _einsum(c):
    eq = c.p("equation").replace(" ", "")
    ops = c.ts("values")
    lhs = eq.split("->")[0].split(",")
    # MIL broadcasts size-1 batch dims (B or H of 1 on one side): expand them to the other side's size.
    sizes: dict[str, int] = {}
    for term, t in zip(lhs, ops):
        for ch, n in zip(term, t.shape):
            sizes[ch] = max(sizes.get(ch, 1), n)
    ops = [t.expand([sizes[ch] for ch in term]) for term, t in zip(lhs, ops)]
    return torch.einsum(eq, *ops)


def _spatial_pads(kind: str, in_sizes, kernel, strides, dilations, custom) -> list[tuple[int, int]]:
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


def _pad_spatial(x: torch.Tensor, pads, value=0.0) -> torch.Tensor:
    if not any(a or b for a, b in pads):
        return x
    flat = []
    for a, b in reversed(pads):
        flat += [a, b]
    return F.pad(x, flat, value=value)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_op("conv")
def _conv(c):
    x, w = c.t("x"), c.t("weight")
    n = x.ndim - 2
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    pads = _spatial_pads(c.p("pad_type", "valid"), x.shape[2:], w.shape[2:], strides, dil, c.ints("pad", [0] * 2 * n))
    b = c.t("bias") if c.has("bias") else None
    groups = int(c.p("groups", 1))
    if all(a == bb for a, bb in pads):
        return _CONV[n](x, w, b, stride=strides, padding=[a for a, _ in pads], dilation=dil, groups=groups)
    return _CONV[n](_pad_spatial(x, pads), w, b, stride=strides, padding=0, dilation=dil, groups=groups)


@_op("conv_transpose")
def _conv_transpose(c):
    x, w = c.t("x"), c.t("weight")
    n = x.ndim - 2
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    groups = int(c.p("groups", 1))
    b = c.t("bias") if c.has("bias") else None
    y = _CONV_T[n](x, w, b, stride=strides, padding=0, dilation=dil, groups=groups)
    kind = c.p("pad_type", "valid")
    full = y.shape[2:]
    out_shape = c.ints("output_shape")
    if out_shape is not None:
        target = out_shape[2:]
    else:
        target = [int(d) for d in c.out_shape()[2:]]
    if kind == "custom" and out_shape is None:
        pad = c.ints("pad", [0] * 2 * n)
        before = [pad[2 * i] for i in range(n)]
    elif kind == "same":
        before = [max(0, (full[i] - target[i])) // 2 for i in range(n)]
    else:
        before = [0] * n
    index = [slice(None), slice(None)]
    grow = []
    for i in range(n):
        end = min(full[i], before[i] + target[i])
        index.append(slice(before[i], end))
        grow.append(target[i] - (end - before[i]))
    y = y[tuple(index)]
    if any(grow):
        y = _pad_spatial(y, [(0, g) for g in grow])
    return y


# -- normalization
def _mean_var(x, dims):
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return mean, var


@_op("batch_norm")
def _batch_norm(c):
    # gamma (x - mean) / sqrt(variance + epsilon) + beta, per channel (axis 1)
    return F.batch_norm(c.t("x"), c.t("mean"), c.t("variance"), c.t("gamma") if c.has("gamma") else None,
                        c.t("beta") if c.has("beta") else None, training=False, eps=c.p("epsilon", 1e-5))


@_op("instance_norm")
def _instance_norm(c):
    x = c.t("x")
    dims = tuple(range(2, x.ndim))
    mean, var = _mean_var(x, dims)
    y = (x - mean) / torch.sqrt(var + c.p("epsilon", 1e-5))
    if c.has("gamma"):
        y = y * _per_channel(c.t("gamma"), x.ndim)
    if c.has("beta"):
        y = y + _per_channel(c.t("beta"), x.ndim)
    return y


@_op("layer_norm")
def _layer_norm(c):
    x = c.t("x")
    axes = c.ints("axes")
    axes = list(range(x.ndim)) if axes is None else sorted(_axis(a, x.ndim) for a in axes)
    eps = c.p("epsilon", 1e-5)
    if axes == list(range(x.ndim - len(axes), x.ndim)):
        g = c.t("gamma") if c.has("gamma") else None
        b = c.t("beta") if c.has("beta") else None
        return F.layer_norm(x, x.shape[x.ndim - len(axes):], g, b, eps)
    mean, var = _mean_var(x, tuple(axes))
    y = (x - mean) / torch.sqrt(var + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if c.has("gamma"):
        y = y * c.t("gamma").reshape(shape)
    if c.has("beta"):
        y = y + c.t("beta").reshape(shape)
    return y


@_op("l2_norm")
def _l2_norm(c):
    x = c.t("x")
    dims = tuple(range(x.ndim - 3, x.ndim))
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + c.p("epsilon", 1e-6))


@_op("local_response_norm")
def _lrn(c):
    x = c.t("x")
    size = int(c.p("size"))
    alpha, beta, k = c.p("alpha", 1e-4), c.p("beta", 0.75), c.p("k", 1.0)
    sq = (x * x).unsqueeze(1)  # [n, 1, C, *D]
    pad = [0, 0] * (x.ndim - 2) + [size // 2, (size - 1) // 2]
    sq = F.pad(sq, pad)
    window = sq.unfold(2, size, 1).sum(-1).squeeze(1)
    return x / (k + alpha / size * window) ** beta


# -- pooling
def _pool_args(c, x):
    n = x.ndim - 2
    kernel = c.ints("kernel_sizes")
    strides = c.ints("strides", [1] * n)
    pads = _spatial_pads(c.p("pad_type", "valid"), x.shape[2:], kernel, strides, [1] * n, c.ints("pad", [0] * 2 * n))
    if c.p("ceil_mode", False):
        pads = list(pads)
        for i in range(n):
            d = x.shape[2 + i] + pads[i][0] + pads[i][1]
            out = math.ceil((d - kernel[i]) / strides[i]) + 1
            if (out - 1) * strides[i] >= x.shape[2 + i] + pads[i][0] and (pads[i][0] + pads[i][1]) > 0:
                out -= 1
            need = (out - 1) * strides[i] + kernel[i] - d
            if need > 0:
                pads[i] = (pads[i][0], pads[i][1] + need)
    return kernel, strides, pads


_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window_sum(x, kernel, strides):
    n = x.ndim - 2
    return _AVG[n](x, kernel, strides) * float(np.prod(kernel))


@_op("avg_pool")
def _avg_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    s = _window_sum(_pad_spatial(x, pads), kernel, strides)
    if c.p("exclude_padding_from_average", False):
        ones = _pad_spatial(torch.ones((1, 1) + tuple(x.shape[2:])), pads)
        return s / _window_sum(ones, kernel, strides)
    return s / float(np.prod(kernel))


@_op("max_pool")
def _max_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    return _MAX[x.ndim - 2](_pad_spatial(x, pads, value=-math.inf), kernel, strides)


@_op("l2_pool")
def _l2_pool(c):
    x = c.t("x")
    kernel, strides, pads = _pool_args(c, x)
    return torch.sqrt(_window_sum(_pad_spatial(x * x, pads), kernel, strides))


# -- reductions
def _reduce_axes(c, x):
    axes = c.ints("axes")
    return tuple(range(x.ndim)) if axes is None else tuple(_axis(a, x.ndim) for a in axes)


def _reduction(fn):
    def h(c):
        x = c.t("x")
        axes = _reduce_axes(c, x)
        return fn(_as_float(x) if fn is not _rmax and fn is not _rmin else x, axes, bool(c.p("keep_dims", False)))
    return h


def _rmax(x, axes, keep):
    return torch.amax(x, dim=axes, keepdim=keep)


def _rmin(x, axes, keep):
    return torch.amin(x, dim=axes, keepdim=keep)


_REDUCE = {
    "reduce_sum": lambda x, a, k: x.sum(dim=a, keepdim=k),
    "reduce_mean": lambda x, a, k: x.mean(dim=a, keepdim=k),
    "reduce_prod": lambda x, a, k: _prod(x, a, k),
    "reduce_max": _rmax, "reduce_min": _rmin,
    "reduce_l1_norm": lambda x, a, k: x.abs().sum(dim=a, keepdim=k),
    "reduce_l2_norm": lambda x, a, k: torch.sqrt((x * x).sum(dim=a, keepdim=k)),
    "reduce_sum_square": lambda x, a, k: (x * x).sum(dim=a, keepdim=k),
    "reduce_log_sum": lambda x, a, k: torch.log(x.sum(dim=a, keepdim=k)),
    "reduce_log_sum_exp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k),
}


def _prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = x.prod(dim=a, keepdim=keep)
    return x


for _n, _f in _REDUCE.items():
    _HANDLERS[_n] = _reduction(_f)


@_op("reduce_argmax", "reduce_argmin")
def _reduce_arg(c):
    x = c.t("x")
    axis = _axis(int(c.p("axis", -1)), x.ndim)
    keep = bool(c.p("keep_dims", False))
    fn = torch.argmax if c.op.op_type == "reduce_argmax" else torch.argmin
    return fn(x, dim=axis, keepdim=keep)


# -- shape manipulation
@_op("reshape")
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


@_op("reshape_like")
def _reshape_like(c):
    x = c.t("x")
    refs = c.op.inputs["ref_tensors"]
    begins, ends, masks = c.ints("begins"), c.ints("ends"), [bool(m) for m in np.ravel(c.p("end_masks"))]
    shape = []
    for ref, b, e, m in zip(refs, begins, ends, masks):
        s = list(c.run.value(ref).shape)
        shape += s[b:] if m else s[b:e]
    return x.reshape(shape)


@_op("transpose")
def _transpose(c):
    x = c.t("x")
    return x.permute([_axis(p, x.ndim) for p in c.ints("perm")])


@_op("expand_dims")
def _expand_dims(c):
    x = c.t("x")
    axes = c.ints("axes")
    rank = x.ndim + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@_op("squeeze")
def _squeeze(c):
    x = c.t("x")
    axes = c.ints("axes")
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = {_axis(a, x.ndim) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if not (i in axes and d == 1)])


@_op("flatten2d")
def _flatten2d(c):
    x = c.t("x")
    axis = _axis(int(c.p("axis", 1)), x.ndim)
    before = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(before, -1)


@_op("concat")
def _concat(c):
    vals = c.ts("values")
    axis = _axis(int(c.p("axis")), vals[0].ndim)
    if c.p("interleave", False):
        st = torch.stack(vals, dim=axis + 1)
        shape = list(vals[0].shape)
        shape[axis] *= len(vals)
        return st.reshape(shape)
    return torch.cat(vals, dim=axis)


@_op("stack")
def _stack(c):
    vals = c.ts("values")
    return torch.stack(vals, dim=_axis(int(c.p("axis")), vals[0].ndim + 1))


@_op("split")
def _split(c):
    x = c.t("x")
    axis = _axis(int(c.p("axis")), x.ndim)
    sizes = c.ints("split_sizes")
    if sizes is None:
        n = int(c.p("num_splits"))
        sizes = [x.shape[axis] // n] * n
    return tuple(torch.split(x, sizes, dim=axis))


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
            idx.append(_axis(begin[i], x.shape[i]))
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


@_op("slice_by_index")
def _slice_by_index(c):
    x = c.t("x")
    idx, _ = _strided_index(c, x)
    return _apply_index(x, idx)


@_op("slice_update")
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


@_op("slice_by_size")
def _slice_by_size(c):
    x = c.t("x")
    begin, size = c.ints("begin"), c.ints("size")
    idx = []
    for i in range(x.ndim):
        b = _axis(begin[i], x.shape[i])
        idx.append(slice(b, x.shape[i] if size[i] == -1 else b + size[i]))
    return x[tuple(idx)]


@_op("crop")
def _crop(c):
    x = c.t("x")
    ch, cw = c.ints("crop_height"), c.ints("crop_width")
    return x[..., ch[0]:x.shape[-2] - ch[1], cw[0]:x.shape[-1] - cw[1]]


@_op("tile")
def _tile(c):
    return c.t("x").repeat(c.ints("reps"))


@_op("reverse")
def _reverse(c):
    x = c.t("x")
    axes = c.ints("axes")
    axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in axes]
    return torch.flip(x, axes)


@_op("reverse_sequence")
def _reverse_sequence(c):
    x = c.t("x").clone()
    lengths = c.ints("lengths")
    seq, bat = _axis(int(c.p("seq_axis", 0)), x.ndim), _axis(int(c.p("batch_axis", 0)), x.ndim)
    src = c.t("x")
    for b, n in enumerate(lengths):
        xb, sb = x.select(bat, b), src.select(bat, b)
        s = seq - (1 if seq > bat else 0)
        if n > 0:
            xb.narrow(s, 0, n).copy_(torch.flip(sb.narrow(s, 0, n), [s]))
    return x


@_op("sliding_windows")
def _sliding_windows(c):
    x = c.t("x")
    axis = _axis(int(c.p("axis")), x.ndim)
    return x.unfold(axis, int(c.p("size")), int(c.p("stride", 1))).movedim(-1, axis + 1)


@_op("depth_to_space")
def _depth_to_space(c):
    # TensorFlow's DepthToSpace (DCR order) in NCHW: the TF frontend maps tf.nn.depth_to_space to this op.
    x, b = c.t("x"), int(c.p("block_size"))
    n, ch, h, w = x.shape
    return x.reshape(n, b, b, ch // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, ch // (b * b), h * b, w * b)


@_op("space_to_depth")
def _space_to_depth(c):
    x, b = c.t("x"), int(c.p("block_size"))
    n, ch, h, w = x.shape
    return x.reshape(n, ch, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, ch * b * b, h // b, w // b)


@_op("pixel_shuffle")
def _pixel_shuffle(c):
    return F.pixel_shuffle(c.t("x"), int(c.p("upscale_factor")))


@_op("pixel_unshuffle")
def _pixel_unshuffle(c):
    return F.pixel_unshuffle(c.t("x"), int(c.p("downscale_factor")))


# -- tensor creation / misc
@_op("shape")
def _shape(c):
    return torch.tensor(list(c.t("x").shape), dtype=torch.int32)


@_op("fill")
def _fill(c):
    return torch.full(c.ints("shape"), c.p("value", 0.0))


@_op("fill_like")
def _fill_like(c):
    return torch.full(tuple(c.t("ref_tensor").shape), c.p("value", 0.0))


@_op("range_1d")
def _range_1d(c):
    start, end, step = c.p("start"), c.p("end"), c.p("step")
    return torch.arange(start, end, step, dtype=torch.float64 if c.out_dtype() in _FLOAT else torch.int64)


@_op("select")
def _select(c):
    cond = c.t("cond")
    if cond.dtype != torch.bool:
        cond = cond != 0
    a, b = c.t("a"), c.t("b")
    if a.dtype != b.dtype:
        a, b = _as_float(a), _as_float(b)
    return torch.where(cond, a, b)


@_op("band_part")
def _band_part(c):
    x = c.t("x")
    lower, upper = int(c.p("lower", -1)), int(c.p("upper", -1))
    m = torch.arange(x.shape[-2]).unsqueeze(1)
    n = torch.arange(x.shape[-1]).unsqueeze(0)
    keep = ((lower < 0) | ((m - n) <= lower)) & ((upper < 0) | ((n - m) <= upper))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


@_op("cumsum")
def _cumsum(c):
    x = _as_float(c.t("x")) if c.out_dtype() in _FLOAT else c.t("x")
    axis = _axis(int(c.p("axis", 0)), x.ndim)
    rev = bool(c.p("reverse", False))
    if rev:
        x = torch.flip(x, [axis])
    y = torch.cumsum(x, dim=axis)
    if c.p("exclusive", False):
        y = y - x
    if rev:
        y = torch.flip(y, [axis])
    return y


@_op("pad")
def _pad(c):
    x = c.t("x")
    pad = c.ints("pad")
    mode = c.p("mode", "constant")
    n = len(pad) // 2
    flat = []
    for i in range(n - 1, -1, -1):  # torch wants the last dimension first
        flat += [pad[2 * i], pad[2 * i + 1]]
    if mode == "constant":
        return F.pad(x, flat, mode="constant", value=float(c.p("constant_val", 0.0)))
    # torch's reflect/replicate pad wants a batch+channel prefix: fold the leading dims in
    lead = x.shape[:x.ndim - n]
    y = x.reshape((1, int(np.prod(lead, dtype=np.int64))) + tuple(x.shape[x.ndim - n:]))
    if n > 3:
        raise ValueError("reflect/replicate pad over more than 3 dimensions")
    y = F.pad(y, flat, mode="reflect" if mode == "reflect" else "replicate")
    return y.reshape(tuple(lead) + tuple(y.shape[2:]))


@_op("one_hot")
def _one_hot(c):
    idx = c.t("indices").long()
    size = int(c.p("one_hot_vector_size"))
    on, off = c.p("on_value", 1), c.p("off_value", 0)
    oh = F.one_hot(idx.clamp(0, size - 1), size).bool() & (idx >= 0).unsqueeze(-1) & (idx < size).unsqueeze(-1)
    axis = _axis(int(c.p("axis", -1)), idx.ndim + 1)
    out = torch.where(oh, torch.tensor(on, dtype=torch.float64), torch.tensor(off, dtype=torch.float64))
    return out.movedim(-1, axis)


@_op("non_zero")
def _non_zero(c):
    return torch.nonzero(c.t("x"))


@_op("argsort")
def _argsort(c):
    x = c.t("x")
    return torch.argsort(x, dim=int(c.p("axis", -1)), descending=not c.p("ascending", False), stable=True)


@_op("topk")
def _topk(c):
    x = c.t("x")
    k, axis = int(c.p("k", 1)), _axis(int(c.p("axis", -1)), x.ndim)
    asc = bool(c.p("ascending", False))
    order = torch.argsort(x, dim=axis, descending=not asc, stable=True).narrow(axis, 0, k)
    vals = torch.gather(x, axis, order)
    if len(c.op.outputs) == 1:
        return vals
    return vals, order


# -- gather / scatter
def _fix_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + n, idx)


def _gather(x, idx, axis, batch_dims):
    if batch_dims == 0:
        i = _fix_index(idx, x.shape[axis])
        out = x.index_select(axis, i.reshape(-1))
        return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))
    lead = tuple(x.shape[:batch_dims])
    nb = int(np.prod(lead, dtype=np.int64))
    xb, ib = x.reshape((nb,) + tuple(x.shape[batch_dims:])), idx.reshape((nb,) + tuple(idx.shape[batch_dims:]))
    outs = [_gather(xb[i], ib[i], axis - batch_dims, 0) for i in range(nb)]
    return torch.stack(outs).reshape(lead + tuple(outs[0].shape))


@_op("gather")
def _gather_op(c):
    x = c.t("x")
    return _gather(x, c.t("indices"), _axis(int(c.p("axis", 0)), x.ndim), int(c.p("batch_dims", 0)))


@_op("gather_along_axis")
def _gather_along_axis(c):
    x = c.t("x")
    axis = _axis(int(c.p("axis", 0)), x.ndim)
    return torch.gather(x, axis, _fix_index(c.t("indices"), x.shape[axis]))


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


@_op("gather_nd")
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


@_op("scatter")
def _scatter(c):
    data = c.t("data").clone()
    axis = _axis(int(c.p("axis", 0)), data.ndim)
    idx = _fix_index(c.t("indices"), data.shape[axis])
    upd = c.t("updates").to(data.dtype)
    # updates: data.shape[:axis] + indices.shape + data.shape[axis+1:]
    d = data.movedim(axis, 0)
    u = upd.movedim(list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    u = u.reshape((idx.numel(),) + tuple(d.shape[1:]))
    d2 = _scatter_into(d.clone(), (idx.reshape(-1),), u, c.p("mode", "add"))
    return d2.movedim(0, axis)


@_op("scatter_along_axis")
def _scatter_along_axis(c):
    data = c.t("data").clone()
    axis = _axis(int(c.p("axis", 0)), data.ndim)
    idx = _fix_index(c.t("indices"), data.shape[axis])
    upd = c.t("updates").to(data.dtype)
    grids = list(torch.meshgrid(*[torch.arange(n) for n in idx.shape], indexing="ij"))
    grids[axis] = idx
    return _scatter_into(data, tuple(grids), upd, c.p("mode", "add"))


@_op("scatter_nd")
def _scatter_nd(c):
    data = c.t("data").clone()
    idx = c.t("indices").long()
    k = idx.shape[-1]
    cols = tuple(_fix_index(idx[..., j], data.shape[j]) for j in range(k))
    return _scatter_into(data, cols, c.t("updates").to(data.dtype), c.p("mode", "add"))


# -- resizing
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


@_op("upsample_bilinear")
def _upsample_bilinear(c):
    x = c.t("x")
    sh, sw = c.p("scale_factor_height", 1), c.p("scale_factor_width", 1)
    ho, wo = math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw)
    align = bool(c.p("align_corners", True))
    half = c.p("half_pixel_centers", None)
    half = (not align) if half is None else bool(half)
    if align:
        mode = "STRICT_ALIGN_CORNERS"
    else:
        mode = "UNALIGN_CORNERS" if half else "SCALE"
    return _bilinear(x, ho, wo, mode)


@_op("resize_bilinear")
def _resize_bilinear(c):
    x = c.t("x")
    return _bilinear(x, int(c.p("target_size_height", 1)), int(c.p("target_size_width", 1)),
                     c.p("sampling_mode", "DEFAULT"))


def _nearest(x, h_out, w_out):
    hi = torch.div(torch.arange(h_out) * x.shape[-2], h_out, rounding_mode="floor")
    wi = torch.div(torch.arange(w_out) * x.shape[-1], w_out, rounding_mode="floor")
    return x.index_select(x.ndim - 2, hi).index_select(x.ndim - 1, wi)


@_op("upsample_nearest_neighbor")
def _upsample_nn(c):
    x = c.t("x")
    sh, sw = c.p("scale_factor_height", 1), c.p("scale_factor_width", 1)
    if float(sh).is_integer() and float(sw).is_integer():
        return x.repeat_interleave(int(sh), dim=-2).repeat_interleave(int(sw), dim=-1)
    return _nearest(x, math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw))


@_op("resize_nearest_neighbor")
def _resize_nn(c):
    x = c.t("x")
    return _nearest(x, int(c.p("target_size_height")), int(c.p("target_size_width")))


@_op("resize")
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


# -- attention
@_op("scaled_dot_product_attention")
def _sdpa(c):
    q, k, v = c.t("query"), c.t("key"), c.t("value")
    mask = c.t("attn_mask") if c.has("attn_mask") else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# -- activation quantization (iOS17)
def _axis_shaped(v: torch.Tensor, rank: int, axis: int | None) -> torch.Tensor:
    if v.ndim == 0 or axis is None:
        return v
    shape = [1] * rank
    shape[_axis(axis, rank)] = -1
    return v.reshape(shape)


_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15), "int16": (-32768, 32767),
           "uint16": (0, 65535)}


@_op("quantize")
def _quantize(c):
    x = c.t("input")
    axis = c.p("axis", None)
    scale = _axis_shaped(c.t("scale"), x.ndim, axis)
    q = torch.round(x / scale)
    if c.has("zero_point"):
        q = q + _axis_shaped(c.t("zero_point"), x.ndim, axis).to(torch.float32)
    lo, hi = _QRANGE[c.p("output_dtype")]
    return q.clamp(lo, hi)


@_op("dequantize")
def _dequantize(c):
    x = c.t("input").to(torch.float32)
    axis = c.p("axis", None)
    if c.has("zero_point"):
        x = x - _axis_shaped(c.t("zero_point"), x.ndim, axis).to(torch.float32)
    return x * _axis_shaped(c.t("scale"), x.ndim, axis)


# -- constexpr (weight decompression)
def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unsigned ``nbits`` fields packed LSB-first, one byte at a time (the iOS16 constexpr layout)."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.int64)
    return (bits << np.arange(nbits, dtype=np.int64)).sum(axis=1)


@_op("constexpr_affine_dequantize")
def _affine_dequantize(c):
    q = c.t("quantized_data").to(torch.float32)
    axis = int(c.p("axis"))
    zp = _axis_shaped(c.t("zero_point").to(torch.float32), q.ndim, axis)
    scale = _axis_shaped(c.t("scale"), q.ndim, axis)
    return scale * (q - zp)


@_op("constexpr_cast")
def _constexpr_cast(c):
    return c.t("source_val")


def _expand_blocks(v: torch.Tensor, shape) -> torch.Tensor:
    """Broadcast a per-block tensor (same rank, each dim dividing ``shape``) to ``shape``."""
    for d, (n, m) in enumerate(zip(shape, v.shape)):
        if n != m:
            v = v.repeat_interleave(n // m, dim=d)
    return v


@_op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(c):
    data = c.t("data").to(torch.float32)
    scale = c.t("scale")
    shape = tuple(data.shape)
    if c.has("offset"):
        data = data - _expand_blocks(c.t("offset").to(torch.float32), shape)
    return data * _expand_blocks(scale, shape)


def _lut_lookup(indices: torch.Tensor, lut: torch.Tensor, vector_axis: int | None) -> torch.Tensor:
    """iOS18 constexpr_lut_to_dense: per-block LUTs (lut: [*blocks, n_palettes, vector_size])."""
    k = indices.ndim
    blocks, n_pal, vsize = lut.shape[:k], lut.shape[k], lut.shape[k + 1]
    group = torch.zeros(indices.shape, dtype=torch.long)
    for d in range(k):
        per = indices.shape[d] // blocks[d]
        g = torch.arange(indices.shape[d]) // per
        shape = [1] * k
        shape[d] = -1
        group = group * blocks[d] + g.reshape(shape)
    flat = lut.reshape(-1, vsize)
    vals = flat[group * n_pal + indices.long()]  # [*indices.shape, vsize]
    if vsize == 1:
        return vals.squeeze(-1)
    axis = _axis(int(vector_axis), k)
    out_shape = list(indices.shape)
    out_shape[axis] *= vsize
    return vals.movedim(-1, axis + 1).reshape(out_shape)


@_op("constexpr_lut_to_dense")
def _lut_to_dense(c):
    lut = c.t("lut")
    if c.has("shape"):  # iOS16: packed uint8 indices, flat lut, explicit shape
        shape = c.ints("shape")
        count = int(np.prod(shape, dtype=np.int64))
        nbits = round(math.log2(lut.shape[0]))
        idx = torch.from_numpy(_unpack_bits(c.p("indices"), nbits, count))
        return lut[idx].reshape(shape)
    return _lut_lookup(c.t("indices"), lut, c.p("vector_axis", None))


@_op("constexpr_sparse_to_dense")
def _sparse_to_dense(c):
    data = c.t("nonzero_data")
    if c.has("shape"):  # iOS16: packed bit mask + shape
        shape = c.ints("shape")
        count = int(np.prod(shape, dtype=np.int64))
        mask = torch.from_numpy(_unpack_bits(c.p("mask"), 1, count).astype(bool))
    else:
        m = c.t("mask")
        shape, mask = list(m.shape), m.reshape(-1) != 0
    out = torch.zeros(int(np.prod(shape, dtype=np.int64)), dtype=data.dtype)
    out[mask.reshape(-1)] = data.reshape(-1)
    return out.reshape(shape)


@_op("constexpr_lut_to_sparse")
def _lut_to_sparse(c):
    mask = c.t("indices_mask") != 0
    dense_idx = torch.zeros(mask.shape, dtype=torch.long)
    dense_idx[mask] = c.t("indices_nonzero_data").long().reshape(-1)
    lut = c.t("lut")
    va = c.p("vector_axis", None)
    dense = _lut_lookup(dense_idx, lut, va)
    vsize = lut.shape[-1]
    out_mask = mask if vsize == 1 else mask.repeat_interleave(vsize, dim=_axis(int(va), mask.ndim))
    return out_mask, dense[out_mask]


@_op("constexpr_sparse_blockwise_shift_scale")
def _sparse_blockwise_shift_scale(c):
    mask = c.t("data_mask") != 0
    dense = torch.zeros(mask.shape, dtype=torch.float32)
    dense[mask] = c.t("nonzero_data").to(torch.float32).reshape(-1)
    shape = tuple(mask.shape)
    if c.has("offset"):
        dense = dense - _expand_blocks(c.t("offset").to(torch.float32), shape)
    dense = dense * _expand_blocks(c.t("scale"), shape)
    return mask, dense[mask]


_HANDLERS["const"] = lambda c: None  # materialised lazily by the interpreter

SUPPORTED_OPS: frozenset[str] = frozenset(_HANDLERS)

