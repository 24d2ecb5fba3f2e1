"""Core ML target for iOS: torch.export -> coremltools MIL -> mlprogram package (.mlpackage).

Conversion path: ``torch.export`` (not ``torch.jit.trace``). torch 2.13 deprecates ``torch.jit.trace``;
torch.export keeps the component's keyword input names as the program's input names, keeps ``einsum``
as one op (the split-einsum UNet becomes Core ML's native einsum) and measured faster and leaner on the
full SD1.5 UNet (87 s / 6.5 GB vs 105 s / 6.7 GB traced). Its one gap in coremltools 9.0 is
``aten.alias`` (CLIP's position_ids buffer), registered here as the identity it is.

Steps, all on one in-memory MIL program, serialised once:

1. passes: ``split_einsum_attention`` on the UNet for ``--attention split-einsum`` (the Neural Engine
   layout, mobilesd/passes/split_einsum.py); ``original`` keeps diffusers' attention (for the GPU);
2. ``ct.convert(..., convert_to="milinternal")``: mlprogram ops at ``--min-deployment-target``
   (iOS16/17/18, default iOS17), compute precision FLOAT16 (FLOAT32 for ``--precision fp32``);
3. integer weights the component carries from our quantizer (``component.quantized_weights``) replace
   their const ops as ``constexpr_affine_dequantize`` (iOS16/17) or ``constexpr_blockwise_shift_scale``
   (iOS18) holding exactly those integers and scales (never re-quantized);
4. static activation quantization (W8A8, ``component.activation_scales``): quantize -> dequantize
   (iOS17 ops) in front of each listed layer's input, one scale per layer (the max over the steps);
5. weight compression of the remaining float weights with coremltools.optimize's graph passes (the
   passes behind ``ct.optimize.coreml.linear_quantize_weights`` / ``palettize_weights``): int8 linear
   symmetric per output channel; int4 linear symmetric per block of 32 input channels (iOS18);
   palettization 4/6/8 bit, k-means (kmeans1d's optimal 1-D k-means on fp16 weights) or uniform, one
   lookup table per tensor. Weights under 2048 elements stay float (coremltools' default threshold);
6. cleanup passes and serialisation to ``<name>.mlpackage``.

A UNet chunk reads and makes a tensor both named ``hidden``: Core ML needs unique names, so the file's
output is ``hidden_out`` (``meta.file_output_names``, as the ONNX target does); the manifest keeps the
bundle-wide names and runtimes read outputs by position.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from mobilesd.converters.base import ConvertedGraph, Converter, TensorSpec, third_party_noise_ignored

from mobilesd.errors import MobileSDError

DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
DEFAULT_DEPLOYMENT_TARGET = "iOS17"
ATTENTION_MODES = ("split-einsum", "original")   # first: the ios default (the Neural Engine layout)
PALETTIZE_BITS = (4, 6, 8)
PALETTIZE_MODES = ("kmeans", "uniform")
WEIGHT_THRESHOLD = 2048           # coremltools' default: smaller weights stay float
INT4_BLOCK_SIZE = 32
# Apple: each model the Neural Engine loads on iOS / iPadOS must hold under 1 GB of weights
# (ml-stable-diffusion README, --chunk-unet). 1 GB = 10^9 bytes, in MiB:
ANE_MAX_MB = 953.0


def _ct():
    """Import coremltools without its Linux start-up noise (no native runtime here) and register the
    torch.export ops it lacks."""
    # coremltools' start-up notes (no libcoremlpython on Linux, untested torch / scikit-learn versions) are
    # logging records, not warnings: the redirects keep them off the user's terminal
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        import coremltools as ct
        from coremltools.converters.mil.frontend.torch import ops as torch_ops
        from coremltools.converters.mil.frontend.torch.torch_op_registry import (
            _TORCH_OPS_REGISTRY,
        )
    for name in ("coremltools", "coremltools.converters", "coremltools.optimize"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if _TORCH_OPS_REGISTRY.get_func("alias") is None:
        # aten.alias (torch.export of CLIP's position_ids buffer slice) is a view: the identity
        _TORCH_OPS_REGISTRY.set_func_by_name(torch_ops.noop, "alias")
    return ct


_TRIG = ("sin", "cos")


def _feeds_only_trig(op, depth: int = 0) -> bool:
    """Whether every use of ``op``'s outputs is a sin/cos or, in turn, feeds only sin/cos: the phase chain."""
    children = [c for out in op.outputs for c in out.child_ops]
    return bool(children) and depth < 8 and all(c.op_type in _TRIG or _feeds_only_trig(c, depth + 1)
                                                for c in children)


def _fp16_op(op) -> bool:
    """Which ops compute in fp16 under FLOAT16 compute precision: all but the timestep embedding's phase
    (the ops from ``t`` up to sin/cos, e.g. ``t * freq``) and the sin/cos themselves. In fp16 the phase of
    t = 999 is off by up to ~0.5 rad (fp16 spacing at 512..1024 is 0.5), which made the UNet's time
    embedding 2e-2 wrong (relative L2); a Fourier time embedding (``time_embedding_type="fourier"``:
    ``2 pi w t``, |w t| in the thousands) lost it all (1e-1) while only its last multiplication stayed fp32.
    These few [1, 160]-sized ops stay fp32 (on device: CPU/GPU)."""
    return not (op.op_type in _TRIG or _feeds_only_trig(op))


def _target(ct, name: str):
    return getattr(ct.target, name)


def package_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class CoreMLConverter(Converter):
    target = "ios"
    format = "mlpackage"
    suffix = ".mlpackage"
    precisions = ("fp32", "fp16", "int8", "int4")
    attention_modes = ATTENTION_MODES
    target_options = ("min_deployment_target", "palettize", "palettize_mode")
    passes: tuple[str, ...] = ()   # the UNet's pass depends on --attention: passes_for(role)

    # ---- options ------------------------------------------------------------------------------------
    @property
    def deployment_target(self) -> str:
        return self.options.get("min_deployment_target") or DEFAULT_DEPLOYMENT_TARGET

    @property
    def palettize(self) -> int | None:
        return self.options.get("palettize")

    @property
    def palettize_mode(self) -> str:
        return self.options.get("palettize_mode") or "kmeans"

    def check_options(self) -> None:
        super().check_options()
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise MobileSDError(f"--min-deployment-target {self.deployment_target} is not supported",
                                f"use one of {list(DEPLOYMENT_TARGETS)}")
        if self.palettize is not None and self.palettize not in PALETTIZE_BITS:
            raise MobileSDError(f"--palettize {self.palettize} is not supported", f"use one of {list(PALETTIZE_BITS)}")
        if self.palettize_mode not in PALETTIZE_MODES:
            raise MobileSDError(f"--palettize-mode {self.palettize_mode} is not supported",
                                f"use one of {list(PALETTIZE_MODES)}")

    def check_precision(self, precision: str) -> None:
        super().check_precision(precision)
        if precision == "int4" and self.deployment_target != "iOS18":
            raise MobileSDError(f"--precision int4 (block-wise 4-bit weights) needs Core ML's iOS18 ops; "
                                f"--min-deployment-target is {self.deployment_target}",
                                "pass --min-deployment-target iOS18, or use --precision int8 or --palettize 4")
        if self.palettize is not None and precision not in ("fp16", "fp32"):
            raise MobileSDError(f"--palettize replaces the weight quantization: it cannot be combined with "
                                f"--precision {precision}",
                                "use --palettize N with --precision fp16 (fp16 lookup tables), or drop --palettize")

    def threshold_key(self, precision: str) -> str:
        return f"pal{self.palettize}" if self.palettize else precision

    def weight_scheme(self, precision: str) -> dict | None:
        if self.palettize:
            return {"kind": "palettize", "bits": self.palettize, "mode": self.palettize_mode,
                    "min_elements": WEIGHT_THRESHOLD}
        scheme = super().weight_scheme(precision)
        if scheme and precision == "int4":
            scheme["block"] = INT4_BLOCK_SIZE
        return dict(scheme, min_elements=WEIGHT_THRESHOLD) if scheme else None

    def compression_mode(self, precision: str) -> str:
        if self.palettize:
            return f"palettize-{self.palettize_mode}-{self.palettize}bit"
        return {"fp32": "none-fp32", "fp16": "none-fp16", "int8": "linear-int8-per-channel",
                "int4": f"linear-int4-per-block{INT4_BLOCK_SIZE}"}[precision]

    def passes_for(self, role: str) -> list[str]:
        return ["split_einsum_attention"] if role == "unet" and self.attention == "split-einsum" else ["finite_causal_mask"] if role == "text_encoder" else []

    # ---- conversion ---------------------------------------------------------------------------------
    def convert(self, component, out_dir: Path, precision: str = "fp16") -> ConvertedGraph:
        import torch

        from mobilesd.passes import apply_passes

        self.check_component(component, precision)
        ct = _ct()
        out_dir = Path(out_dir)
        passes = self.passes_for(component.role)
        module = apply_passes(component.module, passes).eval()
        path = out_dir / f"{component.name}{self.suffix}"
        inputs = list(component.example_inputs)
        file_outputs = [f"{n}_out" if n in component.example_inputs else n for n in component.output_names]
        log = io.StringIO()
        try:
            with torch.no_grad(), third_party_noise_ignored(), contextlib.redirect_stderr(log), \
                    contextlib.redirect_stdout(log):
                ep = torch.export.export(module, (), dict(component.example_inputs)).run_decompositions({})
                prog = ct.convert(ep, convert_to="milinternal",
                                  minimum_deployment_target=_target(ct, self.deployment_target),
                                  compute_precision=ct.precision.FLOAT32 if precision == "fp32" else
                                  ct.transform.FP16ComputePrecision(op_selector=_fp16_op),
                                  outputs=[ct.TensorType(name=n) for n in file_outputs])
                del ep
        except Exception as exc:
            raise MobileSDError(f"coremltools could not convert {component.name}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                                "this architecture may use an op coremltools cannot lower; "
                                "report it with the model's config") from exc
        func = prog.functions["main"]
        got_inputs = list(func.inputs)
        if got_inputs != inputs:
            raise MobileSDError(f"{component.name}: Core ML program inputs {got_inputs} != component inputs {inputs}",
                                "report this (torch.export changed the input names)")
        meta = dict(component.meta)
        fp16 = precision != "fp32"
        quantized = getattr(component, "quantized_weights", None) or {}
        act = getattr(component, "activation_scales", None) or {}
        if act and self.deployment_target == "iOS16":
            raise MobileSDError("activation quantization (W8A8) needs Core ML's iOS17 quantize/dequantize ops",
                                "pass --min-deployment-target iOS17 or iOS18")
        if quantized or act:
            # every weight we touch, located before anything changes the program: param name -> its var
            names = list(quantized) + [f"{m}.weight" for m in act if f"{m}.weight" not in quantized]
            weights = {n: op.outputs[0] for n, op in _find_weight_consts(prog, module, names, fp16).items()}
            if quantized:
                meta["quantized_weights"] = carry_quantized_weights(prog, weights, quantized,
                                                                    self.deployment_target, fp16)
            if act:
                meta["activation_quantization"] = insert_activation_quantization(prog, weights, act, fp16)
        # layers a quantized model keeps in floating point (its policy: e.g. skip convs; SVDQuant's low-rank
        # branches) stay float here too
        float_layers = [f"{n}.weight" for n in (getattr(component, "float_layers", None) or [])]
        keep = _find_weight_consts(prog, module, float_layers, fp16, strict=False) if float_layers else {}
        if getattr(component, "lowrank_layers", None):
            meta["svdquant"] = _lowrank_summary(component, keep)
        with third_party_noise_ignored(), contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            compression = self._compress(ct, prog, precision, keep_float={op.name for op in keep.values()})
            if float_layers:
                compression["float_layers_kept"] = len(keep)
            for f in prog.functions.values():
                f._essential_scope_sources = []  # debug scope info: our rewrites carry none
            mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=_target(ct, self.deployment_target),
                                 pass_pipeline=ct.PassPipeline.CLEANUP, skip_model_load=True)
            del prog
            tmp = out_dir / f".{component.name}.partial{self.suffix}"
            shutil.rmtree(tmp, ignore_errors=True)
            mlmodel.save(str(tmp))
            del mlmodel
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        compression.update(weight_file_bytes=weights.stat().st_size if weights.exists() else 0)
        outputs = component.run(component.example_inputs)
        meta.update(
            file_output_names=file_outputs,
            coreml={"min_deployment_target": self.deployment_target,
                    "attention": self.attention if component.role == "unet" else "original",
                    "compute_precision": "float32" if precision == "fp32" else "float16", "conversion": "torch.export",
                    "coremltools": ct.__version__},
            compression=compression)
        return ConvertedGraph(
            name=component.name, role=component.role, file=path.name, format=self.format, precision=precision,
            inputs=[TensorSpec.of(k, v) for k, v in component.example_inputs.items()],
            outputs=[TensorSpec.of(n, o) for n, o in zip(component.output_names, outputs)],
            size_bytes=package_bytes(path), passes=passes, meta=meta)

    def _compress(self, ct, prog, precision: str, keep_float: set[str] = frozenset()) -> dict:
        import coremltools.optimize.coreml as cto
        from coremltools.converters.mil.mil.passes.graph_pass import PassOption
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

        info = {"mode": self.compression_mode(precision), "weight_threshold": WEIGHT_THRESHOLD}
        if self.palettize:
            cfg = cto.OpPalettizerConfig(mode=self.palettize_mode, nbits=self.palettize, granularity="per_tensor",
                                         weight_threshold=WEIGHT_THRESHOLD)
            name = "compression::palettize_weights"
            info.update(method="palettization", nbits=self.palettize, palettize_mode=self.palettize_mode,
                        granularity="per_tensor")
        elif precision in ("int8", "int4"):
            if precision == "int8":
                cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                  weight_threshold=WEIGHT_THRESHOLD)
                info.update(granularity="per_channel")
            else:
                cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                                  block_size=INT4_BLOCK_SIZE, weight_threshold=WEIGHT_THRESHOLD)
                info.update(granularity="per_block", block_size=INT4_BLOCK_SIZE)
            name = "compression::linear_quantize_weights"
            info.update(method="linear_symmetric", nbits=8 if precision == "int8" else 4)
        else:
            info.update(method="none", nbits=32 if precision == "fp32" else 16)
            info.update(_weight_census(prog))
            return info
        graph_pass = PASS_REGISTRY[name]
        config = cto.OptimizationConfig(global_config=cfg, op_name_configs=dict.fromkeys(keep_float))
        graph_pass.set_options([PassOption("config", config),
                                PassOption("joint_compression", False)])
        graph_pass.apply(prog)
        info.update(_weight_census(prog))
        return info


def _weight_census(prog) -> dict:
    """Weight tensors left float vs compressed (constexpr ops), by op type."""
    counts: dict[str, int] = {}
    float_tensors = float_bytes = 0
    for f in prog.functions.values():
        for op in f.operations:
            if op.op_type.startswith("constexpr_"):
                counts[op.op_type] = counts.get(op.op_type, 0) + 1
            elif op.op_type == "const":
                val = op.outputs[0].val
                if isinstance(val, np.ndarray) and val.size >= 16 and np.issubdtype(val.dtype, np.floating):
                    float_tensors += 1
                    float_bytes += val.nbytes
    return {"compressed_tensors": counts, "float_tensors": float_tensors, "float_weight_bytes": int(float_bytes)}


# ---- integer weights from our quantizer, carried over exactly -----------------------------------------

def _const_key(val: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(val).tobytes()).hexdigest() + str(val.size) + str(val.dtype)


def _find_weight_consts(prog, module, names: list[str], fp16: bool, strict: bool = True) -> dict:
    """param name -> const op holding that parameter (after coremltools' folding and fp16 cast).

    First by name (torch.export's placeholder ``p_<path with _>``, coremltools' ``_to_fp16`` suffix), then
    by value: the const whose values equal the parameter's (as fp16 when the program computes in fp16)
    in row-major order, so a const folded through a reshape (a Linear weight viewed as a 1x1 conv by the
    split-einsum pass) is found too. ``strict=False``: names not found are left out instead of an error."""
    func = prog.functions["main"]
    consts = {op.name: op for op in func.operations if op.op_type == "const"}
    params = dict(module.named_parameters())
    found, by_value = {}, None
    for name in names:
        if name not in params:
            if not strict:
                continue
            raise MobileSDError(f"quantized weight {name!r} is not a parameter of this component",
                                "the quantized-weight table does not match the model")
        ref = params[name].detach().cpu().numpy().astype(np.float16 if fp16 else np.float32)
        base = "p_" + name.replace(".", "_")
        op = None
        for cand in (base + "_to_fp16", base):
            c = consts.get(cand)
            if c is not None and isinstance(c.outputs[0].val, np.ndarray) and c.outputs[0].val.size == ref.size \
                    and np.array_equal(c.outputs[0].val.reshape(-1), ref.reshape(-1)):
                op = c
                break
        if op is None:
            if by_value is None:
                by_value = {}
                for c in consts.values():
                    v = c.outputs[0].val
                    if isinstance(v, np.ndarray) and v.size >= 16 and np.issubdtype(v.dtype, np.floating):
                        by_value.setdefault(_const_key(v), c)
            op = by_value.get(_const_key(ref))
        if op is None and not strict:
            continue
        if op is None:
            raise MobileSDError(f"quantized weight {name!r}: no const in the Core ML program holds it "
                                "(a conversion pass folded it into another value)",
                                "report this with the model's config; export without --quantized meanwhile")
        found[name] = op
    return found


def _normalise_scale(scale: np.ndarray, shape: tuple) -> np.ndarray:
    """A scale (or zero point) -> the weight's rank, each dim 1 or dividing the weight's dim. A scale of
    lower rank lines up with the weight's *leading* dims (``[O]`` or ``[O, I/g]`` for a conv weight ``[O, I,
    kh, kw]`` mean per output channel / per block of input channels), the way quantizers write them."""
    scale = np.asarray(scale, np.float32)
    if scale.ndim < len(shape):
        scale = scale.reshape(scale.shape + (1,) * (len(shape) - scale.ndim))
    if scale.ndim != len(shape) or any(s != 1 and d % s for s, d in zip(scale.shape, shape)):
        raise MobileSDError(f"quantization scale of shape {list(scale.shape)} does not fit a weight of shape {list(shape)}",
                            "scales must be per tensor, per output channel or per block")
    return scale


def carry_quantized_weights(prog, weights: dict, table: dict, deployment_target: str, fp16: bool) -> dict:
    """Replace each listed weight's const op by a constexpr op holding the given integers and scales.

    ``table``: ``{param_name: {"int": int8 array (shape of the parameter), "scale": float32 array
    (per tensor, per output channel ``[O, 1, ...]`` / ``[O]``, or per block ``[O, I/g, 1, ...]`` / ``[O, I/g]``),
    "zero_point": int8 array or None, "bits": 8 | 4, "group_size": int | None}}``, where the parameter
    equals ``scale * (int - zero_point)``. The integers go into the package as they are (int8 storage, or
    int4 on iOS18 for 4-bit); the scale is stored in the compute precision (fp16 unless --precision fp32).

    iOS16/17: ``constexpr_affine_dequantize`` (one scale per tensor or per output channel, axis 0).
    iOS18: ``constexpr_blockwise_shift_scale`` (any block shape). Block-wise scales below iOS18 are an error.
    ``weights``: param name -> its const's var (``_find_weight_consts``); updated to the new constexpr vars.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    ops = {n: weights[n].op for n in table}
    sdt = np.float16 if fp16 else np.float32
    ios18 = deployment_target == "iOS18"
    summary = {"count": 0, "op": "constexpr_blockwise_shift_scale" if ios18 else "constexpr_affine_dequantize",
               "bits": {}, "params": []}
    func = prog.functions["main"]
    with func:
        for name, q in table.items():
            op = ops[name]
            shape = tuple(op.outputs[0].shape)
            ints = np.asarray(q["int"])
            bits = int(q.get("bits", 8))
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            if ints.size != int(np.prod(shape)) or ints.min() < lo or ints.max() > hi:
                raise MobileSDError(f"quantized weight {name!r}: integers do not fit {bits} bits or the weight shape",
                                    "the quantized-weight table does not match the model")
            pshape = np.shape(q["int"])
            if tuple(shape[:len(pshape)]) != tuple(pshape) or any(d != 1 for d in shape[len(pshape):]):
                raise MobileSDError(f"quantized weight {name!r}: its Core ML const has shape {list(shape)}, "
                                    f"the parameter {list(pshape)}", "report this with the model's config")
            ints = ints.astype(np.int8).reshape(shape)
            extra = (1,) * (len(shape) - len(pshape))  # a Linear weight viewed as a 1x1 conv: [O, I] -> [O, I, 1, 1]
            scale = _normalise_scale(q["scale"], pshape)
            scale = scale.reshape(scale.shape + extra)
            zp = q.get("zero_point")
            zp = None if zp is None or not np.any(zp) else _normalise_scale(np.asarray(zp, np.float32), pshape)
            if zp is not None:
                zp = np.broadcast_to(zp.reshape(zp.shape + extra), scale.shape).astype(np.int8)
            per_channel = all(s == 1 for s in scale.shape[1:])
            if ios18:
                data = ints if bits == 8 else np.asarray(ints, dtype=types.np_int4_dtype)
                kw = {"data": data, "scale": scale.astype(sdt), "before_op": op, "name": op.name + "_carried"}
                if zp is not None:
                    kw["offset"] = zp if bits == 8 else np.asarray(zp, dtype=types.np_int4_dtype)
                new = mb.constexpr_blockwise_shift_scale(**kw)
            else:
                if not per_channel:
                    raise MobileSDError(f"quantized weight {name!r} has block-wise scales {list(np.shape(q['scale']))}: "
                                        f"Core ML stores those only from iOS18 on (--min-deployment-target is "
                                        f"{deployment_target})", "pass --min-deployment-target iOS18")
                s1 = scale.reshape(-1).astype(sdt)
                zp1 = np.zeros(s1.size, np.int8) if zp is None else zp.reshape(-1)
                if s1.size == 1:
                    zp1 = zp1[0]
                new = mb.constexpr_affine_dequantize(quantized_data=ints, zero_point=zp1,
                                                     scale=s1[0] if s1.size == 1 else s1, axis=0, before_op=op,
                                                     name=op.name + "_carried")
            op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new,
                                                            no_check_var_types=True)
            op.enclosing_block.remove_ops([op])
            weights[name] = new
            summary["count"] += 1
            summary["bits"][str(bits)] = summary["bits"].get(str(bits), 0) + 1
            summary["params"].append({"param": name, "const": new.op.name, "bits": bits,
                                      "scale_shape": list(scale.shape)})
    return summary


def _lowrank_summary(component, keep: dict) -> dict:
    """SVDQuant's branch weights in the package: float consts (fp16 under FLOAT16 compute), kept uncompressed."""
    layers = component.lowrank_layers
    names = [f"{n}.{part}.weight" for n in layers for part in ("lowrank_down", "lowrank_up")]
    params = dict(component.module.named_parameters())
    found = [keep[n] for n in names if n in keep]
    smooth = [v["smooth"] for v in layers.values()]
    dtypes: dict[str, int] = {}
    for op in found:
        key = str(op.outputs[0].val.dtype)
        dtypes[key] = dtypes.get(key, 0) + 1
    return {"layers": len(layers), "branch_parameters": int(sum(params[n].numel() for n in names if n in params)),
            "branch_tensors": len(names), "branch_tensors_found": len(found),
            "branch_weight_bytes": int(sum(op.outputs[0].val.nbytes for op in found)), "branch_dtypes": dtypes,
            "smoothing": {"folded": smooth.count("folded"), "multiply": smooth.count("multiply"),
                          "none": smooth.count("none")}}


# ---- W8A8: static activation quantization in front of quantized layers ---------------------------------

def insert_activation_quantization(prog, weights: dict, table: dict, fp16: bool) -> dict:
    """quantize -> dequantize (int8, or uint8 for a zero point above 127) on the input of each layer in
    ``table`` (``{module name: {"scale": per-step scales, "zero_point": int, "timesteps": [...]}}``), with
    one static scale per layer: the largest of its per-step scales (so no step's range is clipped).

    The layer's MIL op is the conv / linear that reads its weight (``weights``: param name -> the var of
    the const or carried constexpr holding ``<module name>.weight``)."""
    from coremltools.converters.mil import Builder as mb

    func = prog.functions["main"]
    sdt = np.float16 if fp16 else np.float32
    done = []
    with func:
        for mname, entry in table.items():
            layer_ops = [c for c in weights[f"{mname}.weight"].child_ops if c.op_type in ("conv", "linear", "matmul")]
            if not layer_ops:
                raise MobileSDError(f"activation quantization: no conv/linear op reads the weight of {mname!r}",
                                    "report this with the model's config")
            scale = float(np.max(np.asarray(entry["scale"], np.float64)))
            zp = int(entry.get("zero_point", 0))
            dtype = "int8" if -128 <= zp <= 127 else "uint8"
            for layer in layer_ops:
                x = layer.x
                q = mb.quantize(input=x, scale=sdt(scale), zero_point=(np.int8 if dtype == "int8" else np.uint8)(zp),
                                output_dtype=dtype, before_op=layer, name=f"{layer.name}_act_q")
                dq = mb.dequantize(input=q, scale=sdt(scale), zero_point=(np.int8 if dtype == "int8" else np.uint8)(zp),
                                   before_op=layer, name=f"{layer.name}_act_dq")
                layer.enclosing_block.replace_uses_of_var_after_op(anchor_op=q.op, old_var=x, new_var=dq,
                                                                   end_op=layer)
            done.append({"layer": mname, "scale": scale, "zero_point": zp, "dtype": dtype,
                         "steps": len(np.atleast_1d(entry["scale"]))})
    return {"count": len(done), "method": "static: one scale per layer = max over the per-step table",
            "layers": done}


def load_package_program(path: str | Path):
    """The MIL program stored in a saved .mlpackage (weights read from its weight file), for inspection."""
    ct = _ct()
    from coremltools.converters.mil.frontend.milproto.load import load

    with contextlib.redirect_stderr(io.StringIO()):
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        return load(spec, spec.specificationVersion, model.weights_dir)
