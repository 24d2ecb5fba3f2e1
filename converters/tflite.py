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

from mobilesd.converters.base import ConvertedGraph, Converter, TensorSpec
from mobilesd.errors import MobileSDError


class TFLiteConverter(Converter):
    target = "android"
    format = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8", "int4")
    passes = ["decompose_group_norm"]

    def convert(self, component, out_dir: Path, precision: str = "fp32") -> ConvertedGraph:
        import litert_torch

        from mobilesd.passes import apply_passes

        self.check_precision(precision)
        litert_torch.config.show_progress = False  # export shows its own per-graph progress bar
        out_dir = Path(out_dir)
        module = apply_passes(component.module, self.passes).eval()
        path = out_dir / f"{component.name}{self.suffix}"
        try:
            edge = litert_torch.convert(module, sample_kwargs=component.example_inputs)
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
                quantize_weights(float_path, path, precision, component.role)
        outputs = component.run(component.example_inputs)
        return ConvertedGraph(
            name=component.name, role=component.role, file=path.name, format=self.format, precision=precision,
            inputs=[TensorSpec.of(k, v) for k, v in component.example_inputs.items()],
            outputs=[TensorSpec.of(n, o) for n, o in zip(component.output_names, outputs)],
            size_bytes=path.stat().st_size, passes=list(self.passes), meta=dict(component.meta))


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


def quantize_weights(float_path: Path, out_path: Path, precision: str, role: str = "unet") -> None:
    from ai_edge_quantizer import quantizer

    from mobilesd.converters._aeq_large_tensors import large_tensor_fix

    # the quantizer prints a summary per call; keep the user's terminal to our progress output
    with large_tensor_fix(), contextlib.redirect_stdout(io.StringIO()):
        qt = quantizer.Quantizer(str(float_path))
        qt.load_quantization_recipe(weight_recipe(precision, role))
        result = qt.quantize()
    tmp = out_path.with_suffix(".tmp")
    result.export_model(str(tmp), overwrite=True)
    os.replace(tmp, out_path)
