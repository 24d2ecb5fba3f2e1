"""The converter interface every target implements.

A converter takes a Component (an nn.Module, its named example inputs and output names) and a weight
precision, writes one graph file into a folder and returns a ConvertedGraph describing it. It knows
nothing about quantization methods, bundles or apps.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError


# Warnings that third-party code raises about its own internals on every conversion: nothing a user can act on.
# Each is ignored by exact message and only inside a conversion call, never process-wide; any other warning
# reaches the user.
THIRD_PARTY_NOISE = (
    # torch 2.13's torch.export calls its own deprecated pytree API (torch/utils/_pytree.py), once per export
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # coremltools 9.0's torch frontend calls its own deprecated _TORCH_OPS_REGISTRY.__contains__, once per op
    (DeprecationWarning, r"Function _TORCH_OPS_REGISTRY\.__contains__ is deprecated"),
)


@contextlib.contextmanager
def third_party_noise_ignored():
    with warnings.catch_warnings():
        for category, message in THIRD_PARTY_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@dataclass
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str

    @classmethod
    def of(cls, name: str, array) -> "TensorSpec":
        arr = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
        return cls(name, list(arr.shape), str(arr.dtype))


@dataclass
class ConvertedGraph:
    name: str                 # component name: text_encoder, unet, unet_chunk0, vae_decoder
    role: str                 # text_encoder | unet | vae_decoder
    file: str                 # path relative to the output folder
    format: str               # tflite | onnx | mlpackage
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    size_bytes: int
    passes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Converter(ABC):
    target: str = ""
    format: str = ""
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    passes: list[str] = []   # graph rewrites this target needs (mobilesd.passes)
    attention_modes: tuple[str, ...] = ("original",)   # --attention values; the first is the default
    target_options: tuple[str, ...] = ()               # further option names only this target accepts

    def __init__(self, options: dict | None = None):
        """``options``: target options from the export request (``ExportOptions.converter_options()``);
        None values mean "the default". Unsupported ones raise MobileSDError before any work is done."""
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.check_options()

    @property
    def attention(self) -> str:
        return self.options.get("attention") or self.attention_modes[0]

    def check_options(self) -> None:
        if self.attention not in self.attention_modes:
            raise MobileSDError(f"--attention {self.attention} is not supported for --target {self.target}",
                                f"use --attention {' or '.join(self.attention_modes)}"
                                + (" (split-einsum is the Core ML Neural Engine layout: --target ios)"
                                   if self.attention == "split-einsum" else ""))
        flags = {"min_deployment_target": "--min-deployment-target", "palettize": "--palettize",
                 "palettize_mode": "--palettize-mode"}
        extra = [k for k in self.options if k != "attention" and k not in self.target_options]
        if extra:
            names = ", ".join(flags.get(k, k) for k in extra)
            raise MobileSDError(f"{names} is not supported for --target {self.target}",
                                f"drop {names}, or use --target ios (Core ML)")

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise MobileSDError(f"precision {precision!r} is not supported for --target {self.target}",
                                f"use one of {list(self.precisions)}")

    def weight_scheme(self, precision: str) -> dict | None:
        """How this converter quantizes weights at ``precision``, for the verification's simulation of it
        (mobilesd.verify.simulated_quantization_error); None for float32 weights."""
        if precision == "fp32":
            return None
        if precision == "fp16":
            return {"kind": "fp16", "min_elements": 0}
        return {"kind": "int", "bits": 8 if precision == "int8" else 4, "min_elements": 0}

    def time_phase_fp16(self, precision: str) -> bool:
        """Whether the device's runtime computes the timestep embedding's phase (``t * freq`` before sin/cos)
        in half precision at ``precision`` (Core ML keeps it fp32, see coreml._fp16_op; fp32/int8 ONNX does)."""
        return False

    def check_component(self, component, precision: str) -> None:
        """Refuse, before converting, what would lose its numerics at this precision (naming the config field)."""
        from mobilesd.components import check_time_phase_fp16

        self.check_precision(precision)
        if self.time_phase_fp16(precision):
            check_time_phase_fp16(component.module, f"--target {self.target}")

    def threshold_key(self, precision: str) -> str:
        """Key of this conversion's verification thresholds in mobilesd.verify (the precision, or e.g.
        ``pal6`` for 6-bit palettized weights)."""
        return precision

    @abstractmethod
    def convert(self, component, out_dir: Path, precision: str = "fp32") -> ConvertedGraph:
        """Write ``component`` as one graph file under ``out_dir``; return its description."""


def get_converter(target: str, options: dict | None = None) -> Converter:
    """The converter of ``target``, configured with the target options (attention layout, ...)."""
    if target in ("android", "web"):   # web: the same TFLite graphs, run by LiteRT.js in the browser
        from mobilesd.converters.tflite import TFLiteConverter

        conv = TFLiteConverter(options)
        conv.target = target
        return conv
    if target == "onnx":
        from mobilesd.converters.onnx import OnnxConverter

        return OnnxConverter(options)
    if target == "ios":
        try:
            from mobilesd.converters.coreml import CoreMLConverter
        except ModuleNotFoundError as exc:
            raise MobileSDError(f"the ios target (Core ML) needs coremltools ({exc})",
                                "install the project's dependencies (bash scripts/setup.sh)") from exc
        return CoreMLConverter(options)
    raise MobileSDError(f"unknown target {target!r}", "use --target android, ios, onnx or web")
