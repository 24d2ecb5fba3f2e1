"""Quantization (imported as ``mobilesd.quant``): PTQ, TDQ and EfficientDM. Filled in by the quantization issue."""
