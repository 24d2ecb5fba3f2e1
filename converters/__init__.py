"""Converters: one interface, one module per target (imported as ``mobilesd.converters``)."""

from mobilesd.converters.base import ConvertedGraph, Converter, TensorSpec, get_converter  # noqa: F401
