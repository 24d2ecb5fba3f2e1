"""Quantization of SD models (imported as ``mobilesd.quant``): PTQ, TDQ intervals, EfficientDM QALoRA.

``quantize(...)`` makes a quantized-model folder; ``QuantizedModel.from_pretrained(Q)`` loads it;
``load_quantized(Q)`` gives a diffusers pipeline that samples with it in PyTorch.
"""

from mobilesd.quant.api import METHODS, quantize
from mobilesd.quant.model import FORMAT, FORMAT_VERSION, QuantizedModel, load_quantized

__all__ = ["FORMAT", "FORMAT_VERSION", "METHODS", "QuantizedModel", "load_quantized", "quantize"]
