"""ONNX target: torch.onnx.export (dynamo exporter) + onnxruntime, the host reference runtime.

Graphs over 2 GB keep their weights in a side file (``NAME.onnx.data``), as protobuf cannot hold more.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from mobilesd.converters.base import ConvertedGraph, Converter, TensorSpec, third_party_noise_ignored
from mobilesd.errors import MobileSDError

_EXTERNAL_DATA_BYTES = 1 << 30


class OnnxConverter(Converter):
    target = "onnx"
    format = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "int8")
    passes: list[str] = ["finite_causal_mask"]
    opset = 18

    def convert(self, component, out_dir: Path, precision: str = "fp32") -> ConvertedGraph:
        import torch

        from mobilesd.passes import apply_passes

        self.check_component(component, precision)
        out_dir = Path(out_dir)
        module = apply_passes(component.module, self.passes).eval()
        path = out_dir / f"{component.name}{self.suffix}"
        external = component.weight_bytes() > _EXTERNAL_DATA_BYTES
        float_path = path if precision == "fp32" else out_dir / f".{component.name}.float.onnx"
        # ONNX names must be unique across a graph: a UNet chunk reads and writes `hidden`, so the file's
        # output is `hidden_out`. The manifest keeps the bundle-wide names; runtimes read outputs by position.
        file_outputs = [f"{n}_out" if n in component.example_inputs else n for n in component.output_names]
        try:
            with third_party_noise_ignored(), contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(module, args=(), kwargs=dict(component.example_inputs), f=str(float_path),
                                  input_names=list(component.example_inputs), output_names=file_outputs,
                                  opset_version=self.opset, dynamo=True, external_data=external,
                                  optimize=True, verbose=False)
        except Exception as exc:
            raise MobileSDError(f"torch.onnx could not export {component.name}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]}", "report it with the model's config") from exc
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # weight int8 per channel; ORT quantizes activations on the fly (dynamic range)
            quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8, per_channel=True,
                             use_external_data_format=external)
            for p in out_dir.glob(f".{component.name}.float.onnx*"):
                p.unlink()
        outputs = component.run(component.example_inputs)
        data = Path(str(path) + ".data")
        size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
        return ConvertedGraph(
            name=component.name, role=component.role, file=path.name, format=self.format, precision=precision,
            inputs=[TensorSpec.of(k, v) for k, v in component.example_inputs.items()],
            outputs=[TensorSpec.of(n, o) for n, o in zip(component.output_names, outputs)],
            size_bytes=size, passes=list(self.passes),
            meta=dict(component.meta, external_data=data.name if data.exists() else None, file_output_names=file_outputs))
