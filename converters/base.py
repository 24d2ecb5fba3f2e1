"""The converter interface every target implements.

A converter takes a Component (an nn.Module, its named example inputs and output names) and a weight
precision, writes one graph file into a folder and returns a ConvertedGraph describing it. It knows
nothing about quantization methods, bundles or apps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError


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

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise MobileSDError(f"precision {precision!r} is not supported for --target {self.target}",
                                f"use one of {list(self.precisions)}")

    @abstractmethod
    def convert(self, component, out_dir: Path, precision: str = "fp32") -> ConvertedGraph:
        """Write ``component`` as one graph file under ``out_dir``; return its description."""


def get_converter(target: str) -> Converter:
    if target == "android":
        from mobilesd.converters.tflite import TFLiteConverter

        return TFLiteConverter()
    if target == "onnx":
        from mobilesd.converters.onnx import OnnxConverter

        return OnnxConverter()
    if target == "ios":
        try:
            from mobilesd.converters.coreml import CoreMLConverter
        except ModuleNotFoundError as exc:
            raise MobileSDError("the ios target (Core ML) is not built yet",
                                "use --target android or --target onnx") from exc
        return CoreMLConverter()
    raise MobileSDError(f"unknown target {target!r}", "use --target android, ios or onnx")
