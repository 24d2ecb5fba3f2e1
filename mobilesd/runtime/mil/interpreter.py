"""The interpreter: evaluates one function of a pymil Program op by op in torch, dispatching each op to its
handler in ``ops/`` and rounding every fp16-typed result to fp16 (the fp16 emulation)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilesd.errors import MobileSDError

from .dtypes import FLOAT, dtype_name, numpy_dtype, round_fp16, storage, to_numpy, to_torch
from .ops import HANDLERS, MOVES_VALUES
from .program import find_function, flat_inputs, is_constexpr, load_program, walk_ops

__all__ = ["MILInterpreter", "OpContext", "UnsupportedMILOp", "interpret", "torch_threads"]


class UnsupportedMILOp(MobileSDError):
    """The program uses MIL op types this interpreter does not implement (raised before anything runs)."""

    def __init__(self, op_types: dict[str, int], where: str = "program"):
        self.op_types = dict(op_types)
        listed = ", ".join(f"{t} (x{n})" for t, n in sorted(self.op_types.items()))
        super().__init__(
            f"{where}: the MIL interpreter does not implement op type(s) {listed}",
            "implement them in mobilesd/runtime/mil/ops/ (one handler each, in the module of the op's family, "
            "with a test against the op's definition; see docs/mil-interpreter.md), or convert without them "
            "(another deployment target or model change), or verify this package with Core ML on macOS")


def _is_constant(op_type: str) -> bool:
    return op_type == "const" or is_constexpr(op_type)


class OpContext:
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

    def array(self, name: str) -> np.ndarray:
        """Input ``name`` as numpy in its declared dtype, as coremltools' ``decompress`` functions take it: a
        const's stored array, else the value held here (e.g. a LUT an upstream constexpr made) cast back."""
        var = self.op.inputs[name]
        if var.val is not None:
            return np.asarray(var.val)
        return self.t(name).numpy().astype(numpy_dtype(var.dtype))

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
        return dtype_name(self.op.inputs[name].dtype)

    def out_dtype(self, i: int = 0) -> str:
        return dtype_name(self.op.outputs[i].dtype)

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
        if _is_constant(op.op_type):
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
        self.func = find_function(self.program, function)
        self.fp16 = fp16_emulation
        self.cache_constants = cache_constants
        self._cache: dict[int, torch.Tensor] = {}
        self._dnames: dict[int, str] = {}
        self.where = where or (str(program) if isinstance(program, (str, Path)) else "program")
        self.ops = list(self.func.operations)
        unknown = Counter(op.op_type for op in walk_ops(self.func) if op.op_type not in HANDLERS)
        if unknown:
            raise UnsupportedMILOp(dict(unknown), self.where)
        # The ops that run (constants materialise lazily at their first use) and each value's last use.
        self.run_ops = [op for op in self.ops if not _is_constant(op.op_type)]
        self.output_vars = list(self.func.outputs)
        keep = {id(v) for v in self.output_vars}
        last: dict[int, int] = {}
        for i, op in enumerate(self.run_ops):
            for var in flat_inputs(op):
                last[id(var)] = i
        self._tracked = set(last) | keep
        # ops that only move fp16 values (exact in fp16): their outputs need no rounding
        self._exact = [op.op_type in MOVES_VALUES and not ({dtype_name(v.dtype) for v in (
            *flat_inputs(op), *op.outputs)} & {"fp32", "fp64"}) for op in self.run_ops]
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
            out = to_torch(val, dtype_name(var.dtype))
        else:
            ctx = OpContext(run, op)
            outs = HANDLERS[op.op_type](ctx)
            outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
            outs = [self._finalize(o, v, False, ctx.seen) for o, v in zip(outs, op.outputs)]
            out = outs[op.outputs.index(var)]
            if self.cache_constants:
                for o, v in zip(outs, op.outputs):
                    self._cache[id(v)] = o.to(torch.float16) if dtype_name(v.dtype) == "fp16" else o
        return out

    def _finalize(self, value, var, exact: bool = False, seen=()) -> torch.Tensor:
        """``value`` cast to ``var``'s declared dtype and, for fp16, rounded (unless ``exact``: the op only
        moves fp16 values around). A fresh result is rounded in place (no second fp32 allocation)."""
        dname = self._dnames.get(id(var))
        if dname is None:
            dname = self._dnames[id(var)] = dtype_name(var.dtype)
        from_numpy = not isinstance(value, torch.Tensor)
        if from_numpy:  # a decompress result; it may be a stored array handed back: never written in place
            arr = np.asarray(value)
            value = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        want = storage(dname)
        fresh = False
        if value.dtype != want:
            value, fresh = value.to(want), True
        if dname == "fp16" and self.fp16 and not exact:
            if not fresh and not from_numpy:
                fresh = value._base is None and value.untyped_storage().data_ptr() not in seen
            if fresh and value.is_contiguous():
                value.copy_(value.to(torch.float16))
            else:
                value = round_fp16(value)
        return value

    # -- running -----------------------------------------------------------------------------------
    def prepare_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise MobileSDError(f"{self.where}: missing inputs {missing} (the function takes {self.input_names})",
                                "pass every input by its Core ML name")
        out = {}
        for name, var in self.func.inputs.items():
            dname = dtype_name(var.dtype)
            arr = np.asarray(inputs[name])
            shape = tuple(var.shape)
            if all(isinstance(d, (int, np.integer)) for d in shape) and arr.shape != shape:
                if arr.size == int(np.prod(shape, dtype=np.int64)):
                    arr = arr.reshape(shape)  # e.g. a scalar timestep for a [1] input
                else:
                    raise MobileSDError(f"{self.where}: input {name} has shape {arr.shape}, the model takes {shape}",
                                        "pass inputs of the shapes the package was converted with")
            t = to_torch(arr.astype(np.float32) if dname in FLOAT else arr, dname)
            if dname == "fp16" and self.fp16:
                t = round_fp16(t)
            out[name] = t
        return out

    def run(self, inputs: dict[str, np.ndarray], progress: bool = False,
            profile: dict | None = None) -> dict[str, np.ndarray]:
        """Evaluate on ``inputs`` (by Core ML name); ``profile``: a dict to add {op type: [count, seconds]} to."""
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
                handler = HANDLERS[op.op_type]
                t0 = time.perf_counter() if profile is not None else 0.0
                ctx = OpContext(run, op)
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
                result[var.name] = to_numpy(val, dtype_name(var.dtype))
        return result


class torch_threads:
    """Run with ``n`` torch intra-op threads (None: leave the setting alone), restored afterwards."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)


def interpret(path_or_program, inputs: dict[str, np.ndarray], *, fp16_emulation: bool = True,
              function: str = "main", progress: bool = False, threads: int | None = None) -> dict[str, np.ndarray]:
    """Evaluate ``function`` of a Core ML ML program on ``inputs`` (by Core ML input name).

    Returns every output of the function by its Core ML output name, as numpy (float32 for float outputs).
    ``fp16_emulation``: round every fp16-typed value to fp16 after each op (what an fp16 Core ML model
    computes); False evaluates the same program in fp32 throughout (weights stay as stored).
    Raises :class:`UnsupportedMILOp` before running anything if the program has ops it does not know.
    """
    interp = MILInterpreter(path_or_program, function, fp16_emulation=fp16_emulation)
    with torch_threads(threads):
        return interp.run(inputs, progress=progress)
