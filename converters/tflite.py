"""TFLite (LiteRT) target for Android: litert-torch conversion, then ai-edge-quantizer for weights.

Weight precision is applied after conversion with ai-edge-quantizer recipes (fp16 casting, int8 / int4
per-channel weight-only): litert-torch's conversion-time quant_config failed on the full SD UNet.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from mobilesd.converters.base import ConvertedGraph, Converter, TensorSpec
from mobilesd.errors import MobileSDError


class TFLiteConverter(Converter):
    target = "android"
    format = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8", "int4")
    passes = ["decompose_group_norm", "finite_causal_mask"]

    def weight_scheme(self, precision: str) -> dict | None:
        scheme = super().weight_scheme(precision)
        return dict(scheme, min_elements=MIN_WEIGHT_ELEMENTS) if scheme else None   # per channel, as the recipe

    def time_phase_fp16(self, precision: str) -> bool:
        return True  # whatever the weights, the LiteRT GPU delegate computes in fp16 (../shared/PROBES.md)

    def convert(self, component, out_dir: Path, precision: str = "fp32") -> ConvertedGraph:
        import litert_torch

        from mobilesd.passes import apply_passes

        self.check_component(component, precision)
        litert_torch.config.show_progress = False  # export shows its own per-graph progress bar
        out_dir = Path(out_dir)
        module = apply_passes(component.module, self.passes).eval()
        path = out_dir / f"{component.name}{self.suffix}"
        try:
            # lightweight conversion keeps constants lazy (and folds them with the LiteRT runtime instead):
            # converting SD1.5's largest UNet chunk peaked at 4.4 GB instead of 6.0 GB, and ran faster
            # (docs/benchmarks/export_sd15_default.md). UNet only: the text encoder converted that way gave a
            # wrong GPU output (caught by the GPU check)
            edge = litert_torch.convert(module, sample_kwargs=component.example_inputs,
                                        lightweight_conversion=component.role == "unet")
        except Exception as exc:
            raise MobileSDError(f"litert-torch could not convert {component.name}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]}",
                                "this architecture may use an op litert-torch cannot lower; "
                                "report it with the model's config") from exc
        if precision == "fp32":
            edge.export(str(path))
            del edge
        else:
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                float_path = Path(tmp) / "float.tflite"
                edge.export(str(float_path))
                del edge
                gc.collect()
                qweights = getattr(component, "quantized_weights", None)
                float_layers = list(getattr(component, "float_layers", ()) or ())
                lowrank = getattr(component, "lowrank_layers", None)
                extra = []
                if lowrank:
                    # SVDQuant's branch layers: found by their weights and renamed (their scope names are not
                    # reliable after conversion), then one fp16 rule for them
                    branch = {f"{n}.{part}" for n in lowrank for part in ("lowrank_down", "lowrank_up")}
                    float_layers = [n for n in float_layers if n not in branch]
                    tag_lowrank_ops(float_path, lowrank_arrays(component))
                    extra = lowrank_rules()
                overrides = (layer_overrides(qweights, float_layers, precision, component.role,
                                             component.module) + extra if qweights else [])
                quantize_weights(float_path, path, precision, component.role, overrides)
        meta = dict(component.meta)
        if getattr(component, "quantized_weights", None) and precision in ("int8", "int4"):
            meta["integer_weights"] = carry_integer_weights(path, component.quantized_weights)
        if getattr(component, "lowrank_layers", None):
            meta["svdquant"] = lowrank_summary(path, component)
        outputs = component.run(component.example_inputs)
        return ConvertedGraph(
            name=component.name, role=component.role, file=path.name, format=self.format, precision=precision,
            inputs=[TensorSpec.of(k, v) for k, v in component.example_inputs.items()],
            outputs=[TensorSpec.of(n, o) for n, o in zip(component.output_names, outputs)],
            size_bytes=path.stat().st_size, passes=list(self.passes), meta=meta)


# What the LiteRT GPU (WebGPU) delegate accepts, found by compiling every variant on it (docs/gpu-delegate.md):
# - fp16: weights cast to fp16 with an explicit DEQUANTIZE, which the delegate folds. Tensors under 1024
#   elements stay fp32 (an fp16 1x1 4->4 conv next to the VAE input made the delegate reject its DEQUANTIZE).
# - int8 / int4: CONV_2D weights are weight-only (explicit DEQUANTIZE); FULLY_CONNECTED weights must stay
#   inside the op (dynamic-range form): with an explicit DEQUANTIZE the delegate fails on a shape mismatch.
#   In the VAE decoder the delegate rejects int FC weights altogether, so those few FCs stay fp16.
# - EMBEDDING_LOOKUP (CLIP's token table) is never touched: the delegate rejects a DEQUANTIZE'd table.
MIN_WEIGHT_ELEMENTS = 1024


def _rule(op: str, bits: int, dtype: str, algorithm: str, compute: str, explicit: bool) -> dict:
    return {
        "regex": ".*", "operation": op, "algorithm_key": algorithm,
        "op_config": {
            "weight_tensor_config": {"num_bits": bits, "symmetric": True, "granularity": "CHANNELWISE",
                                     "dtype": dtype, "block_size": 0},
            "compute_precision": compute, "explicit_dequantize": explicit,
            "skip_checks": False, "min_weight_elements": MIN_WEIGHT_ELEMENTS,
        },
    }


def weight_recipe(precision: str, role: str = "unet") -> list[dict]:
    """The ai-edge-quantizer recipe for a weight precision (activations stay float on the GPU)."""
    fp16 = lambda op: _rule(op, 16, "FLOAT", "float_casting", "FLOAT", True)  # noqa: E731
    if precision == "fp16":
        return [fp16(op) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    if precision in ("int8", "int4"):
        bits = 8 if precision == "int8" else 4
        rules = [_rule(op, bits, "INT", "min_max_uniform_quantize", "FLOAT", True)
                 for op in (("CONV_2D", "DEPTHWISE_CONV_2D") if bits == 8 else ("CONV_2D",))]
        if role == "vae_decoder":
            rules.append(fp16("FULLY_CONNECTED"))
        else:
            rules.append(_rule("FULLY_CONNECTED", bits, "INT", "min_max_uniform_quantize", "INTEGER", False))
        return rules
    raise ValueError(precision)


def quantize_weights(float_path: Path, out_path: Path, precision: str, role: str = "unet",
                     extra_rules: list[dict] | None = None) -> None:
    from ai_edge_quantizer import quantizer

    from mobilesd.converters._aeq_large_tensors import large_tensor_fix

    # the quantizer prints a summary per call; keep the user's terminal to our progress output
    with large_tensor_fix(), contextlib.redirect_stdout(io.StringIO()):
        qt = quantizer.Quantizer(str(float_path))
        qt.load_quantization_recipe(weight_recipe(precision, role) + list(extra_rules or []))
        result = qt.quantize()
    tmp = out_path.with_suffix(".tmp")
    result.export_model(str(tmp), overwrite=True)
    os.replace(tmp, out_path)


# ---- a quantized model's own integers (mobilesd quantize) -------------------------------------------------
# ai-edge-quantizer computes its own min-max scales; a quantized model must keep the integers and scales it
# was trained with. So: per-layer recipe rules give each layer its policy's bits (8-bit first / last layers in
# an int4 graph, full-precision layers kept float), and after quantization every weight tensor is matched to
# its layer and overwritten with that layer's integers and scales (carry_integer_weights). Rules are matched
# against litert-torch's op scopes, which spell a module path a.b.c as ".._a/.._b/.._c;".

def scope_regex(module_path: str, root=None) -> str:
    """The op-scope regex of a module path. Containers (ModuleList / ModuleDict: ``ff.net``, ``to_out``,
    ``resnets``, a UNet chunk's ``parts``) have no scope level of their own in litert-torch's names
    (".._ff/..GEGLU_0/..", "UNetChunk/..Conv2d_conv_in;"): with ``root`` (the component module) those levels
    are left out exactly; without it, a part followed by a numeric index is made optional."""
    import re

    from torch import nn

    parts = module_path.split(".")
    out = ""
    for i, p in enumerate(parts):
        last = i + 1 == len(parts)
        container = False
        if root is not None and not last:
            try:
                container = isinstance(root.get_submodule(".".join(parts[: i + 1])), (nn.ModuleList, nn.ModuleDict))
            except AttributeError:
                container = False
        token = "_" + re.escape(p) + ("" if last else "/[^/;]*")
        if container:
            continue
        if root is None and not last and parts[i + 1].isdigit():
            token = f"(?:{token})?"
        out += token
    return out + ";"


def layer_overrides(qweights: dict, float_layers, precision: str, role: str, root=None) -> list[dict]:
    bits = 8 if precision == "int8" else 4
    fp16 = lambda op, rx: dict(_rule(op, 16, "FLOAT", "float_casting", "FLOAT", True), regex=rx)  # noqa: E731
    rules = []
    for name, entry in qweights.items():
        if entry["bits"] != bits and entry["bits"] == 8:
            rx = scope_regex(name.removesuffix(".weight"), root)
            rules.append(dict(_rule("CONV_2D", 8, "INT", "min_max_uniform_quantize", "FLOAT", True), regex=rx))
            rules.append(dict(_rule("FULLY_CONNECTED", 8, "INT", "min_max_uniform_quantize", "INTEGER", False),
                              regex=rx))
    for name in float_layers:
        rx = scope_regex(name, root)
        rules += [fp16("CONV_2D", rx), fp16("FULLY_CONNECTED", rx)]
    return rules


def _tflite_layout(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)) if w.ndim == 4 else w  # conv OIHW -> OHWI


def carry_integer_weights(path: Path, qweights: dict) -> dict:
    """Overwrite each quantized weight tensor of the graph with its layer's own integers and scales.

    Tensors are matched to layers by shape and value (ai-edge-quantizer's dequantized values lie within half a
    step of the layer's). Returns counts and the layers that could not be carried (left as the quantizer made
    them), which export records in the manifest."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.transformations.transformation_utils import pack_data

    model = flatbuffer_utils.read_model(str(path))
    int8, int4 = 9, 17  # TensorType codes
    wanted = {}  # candidate (layer, part) -> (ints, scale, bits); GEGLU projections are split in row halves
    for name, e in qweights.items():
        if e["zero_point"] is not None or (e["bits"] == 4 and e["group_size"]):
            continue  # TFLite weights are symmetric per channel: those stay as the quantizer made them
        q = _tflite_layout(e["int"].astype(np.int8))
        scale = e["scale"].reshape(-1).astype(np.float32)
        wanted[(name, "all")] = (q, scale, e["bits"])
        h = q.shape[0] // 2
        if q.shape[0] % 2 == 0:
            wanted[(name, "half0")] = (q[:h], scale[:h], e["bits"])
            wanted[(name, "half1")] = (q[h:], scale[h:], e["bits"])
    carried, kinds, seen = {}, {"identical": 0, "overwritten": 0, "folded_constant": 0}, set()
    for sg in model.subgraphs:
        # every constant integer tensor (the weights of CONV_2D, FULLY_CONNECTED, BATCH_MATMUL, ...)
        for t_idx, tensor in enumerate(sg.tensors):
            if t_idx in seen:
                continue
            if tensor.type not in (int8, int4) or tensor.quantization is None or tensor.quantization.scale is None:
                continue
            buf = model.buffers[tensor.buffer]
            if buf.data is None or len(buf.data) == 0:
                continue  # weights stored outside the flatbuffer (> 2 GB models): left as they are
            shape = tuple(int(v) for v in tensor.shape)
            bits = 8 if tensor.type == int8 else 4
            scales = np.asarray(tensor.quantization.scale, np.float32)
            if bits == 8:
                ints = np.frombuffer(bytes(buf.data), np.int8).reshape(shape)
            else:
                raw = np.frombuffer(bytes(buf.data), np.uint8)
                lo, hi = (raw & 0xF).astype(np.int8), (raw >> 4).astype(np.int8)
                ints = np.stack([lo, hi], 1).reshape(-1)[: int(np.prod(shape))]
                ints = np.where(ints > 7, ints - 16, ints).astype(np.int8).reshape(shape)
            col = (-1, *([1] * (len(shape) - 1)))
            deq = ints.astype(np.float32) * scales.reshape(col)
            best, best_err, best_c = None, np.inf, 1.0
            for key, (q, s, b) in wanted.items():
                if key in carried or q.shape != shape or b != bits:
                    continue
                if np.array_equal(q, ints):
                    best, best_err, best_c = key, -1.0, None
                    break
                ours = q.astype(np.float32) * s.reshape(col)
                # the converter may fold a constant into the weights (attention's 1/sqrt(d) into to_q / to_k)
                nz = np.abs(ours) > 0
                c = float(np.median(deq[nz] / ours[nz])) if nz.any() else 1.0
                err = float(np.abs(deq - c * ours).max())
                if err < best_err:
                    best, best_err, best_c = key, err, c
            if best is None or best_err > 0.51 * float(scales.max()) + 1e-12:
                continue
            q, s, _ = wanted[best]
            if best_c is None:
                kinds["identical"] += 1   # the quantizer already made exactly these integers
            else:
                data = q.reshape(-1) if bits == 8 else pack_data(4, q.reshape(-1))
                buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
                tensor.quantization.scale = (s * np.float32(best_c)).tolist()
                tensor.quantization.zeroPoint = [0] * len(s)
                tensor.quantization.quantizedDimension = 0
                kinds["overwritten" if abs(best_c - 1.0) < 1e-6 else "folded_constant"] += 1
            carried[best] = bits
            seen.add(t_idx)
    out = flatbuffer_utils.convert_object_to_bytearray(model)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(out)
    os.replace(tmp, path)
    done = {name for name, part in carried if part == "all"}
    done |= {name for name, part in carried if part == "half0" and (name, "half1") in carried}
    missing = sorted(set(qweights) - done)
    return {"carried_exactly": len(done), "layers": len(qweights), "tensors": kinds, "not_carried": missing}


# ---- SVDQuant's low-rank branches (mobilesd.quant.svdquant) -------------------------------------------------
# The branch layers are float layers of the component (fp16 rules above; tensors under MIN_WEIGHT_ELEMENTS stay
# fp32), the main layers carry the residual's integers. The summary measures what the branches cost in the file:
# each branch weight is found among the graph's float constants by its values (sorted, so any layout matches).

LOWRANK_TAG = "mobilesd_lowrank_branch"
_WEIGHT_OPS = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED"}   # BuiltinOperator codes


def lowrank_arrays(component) -> dict[str, np.ndarray]:
    arrays = {}
    for name in component.lowrank_layers:
        mod = component.module.get_submodule(name)
        for part in ("lowrank_down", "lowrank_up"):
            arrays[f"{name}.{part}"] = getattr(mod, part).weight.detach().cpu().numpy()
    return arrays


def _same_values(vals: np.ndarray, ref: np.ndarray) -> bool:
    """Equal as multisets of values, up to one positive factor (a constant the converter folded in)."""
    if vals.size != ref.size:
        return False
    a, b = np.sort(vals.astype(np.float32).reshape(-1)), np.sort(ref.astype(np.float32).reshape(-1))
    c = float(np.linalg.norm(a) / max(np.linalg.norm(b), 1e-30))
    return bool(np.allclose(a, c * b, rtol=2e-3, atol=1e-6 * max(float(np.abs(a).max()), 1e-30)))


def tag_lowrank_ops(float_path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Rename the output tensor of every CONV_2D / FULLY_CONNECTED op of the float graph whose weight is one of
    ``arrays`` to ``mobilesd_lowrank_branch;<k>``: ai-edge-quantizer matches its rules against output tensor
    names, and after conversion those are unreliable (a main FC's output measured as "..lowrank_down;1"; a
    ModuleList has no scope level). Returns the number of ops tagged."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(float_path))
    left = dict(arrays)
    tagged = 0
    for sg in model.subgraphs:
        outputs = set(sg.outputs)
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in _WEIGHT_OPS or len(op.inputs) < 2:
                continue
            w = sg.tensors[op.inputs[1]]
            buf = model.buffers[w.buffer]
            if w.type != 0 or buf.data is None or len(buf.data) == 0 or op.outputs[0] in outputs:
                continue
            vals = np.frombuffer(bytes(buf.data), np.float32)
            hit = next((k for k, a in left.items() if _same_values(vals, a)), None)
            if hit is None:
                continue
            del left[hit]
            sg.tensors[op.outputs[0]].name = f"{LOWRANK_TAG};{tagged}".encode()
            tagged += 1
    data = flatbuffer_utils.convert_object_to_bytearray(model)
    tmp = float_path.with_suffix(".tagged")
    tmp.write_bytes(data)
    os.replace(tmp, float_path)
    return tagged


def lowrank_rules() -> list[dict]:
    fp16 = lambda op: dict(_rule(op, 16, "FLOAT", "float_casting", "FLOAT", True), regex=f"{LOWRANK_TAG};")  # noqa: E731
    return [fp16("CONV_2D"), fp16("FULLY_CONNECTED")]


def lowrank_summary(path: Path, component) -> dict:
    from ai_edge_litert.tools import flatbuffer_utils

    layers = component.lowrank_layers
    arrays = lowrank_arrays(component)
    model = flatbuffer_utils.read_model(str(path))
    float32, float16 = 0, 1  # TensorType codes
    candidates: dict[int, list] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            buf = model.buffers[t.buffer]
            if t.type not in (float32, float16) or buf.data is None or len(buf.data) == 0:
                continue
            vals = np.frombuffer(bytes(buf.data), np.float32 if t.type == float32 else np.float16)
            candidates.setdefault(vals.size, []).append([np.sort(vals.astype(np.float32)), len(buf.data), t.type, False])
    found, nbytes, dtypes = 0, 0, {"float16": 0, "float32": 0}
    for a in arrays.values():
        for cand in candidates.get(a.size, []):
            vals, size, typ, used = cand
            ref = np.sort((a.astype(np.float16) if typ == float16 else a).astype(np.float32).reshape(-1))
            if not used and _same_values(vals, ref):
                cand[3] = True
                found += 1
                nbytes += size
                dtypes["float16" if typ == float16 else "float32"] += 1
                break
    smooth = [v["smooth"] for v in layers.values()]
    return {"layers": len(layers), "branch_parameters": int(sum(a.size for a in arrays.values())),
            "branch_tensors": len(arrays), "branch_tensors_found": found, "branch_weight_bytes": int(nbytes),
            "branch_dtypes": dtypes, "file_bytes": path.stat().st_size,
            "smoothing": {"folded": smooth.count("folded"), "multiply": smooth.count("multiply"),
                          "none": smooth.count("none")}}
