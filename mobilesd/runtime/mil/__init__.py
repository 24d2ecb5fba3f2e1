"""Verify Core ML packages on Linux: interpret an ML program's MIL op by op in PyTorch (CPU).

Core ML prediction only runs on macOS. This package loads the MIL program stored in an ``.mlpackage``
back into coremltools' pymil (``milproto.load``) and evaluates it op by op with torch, rounding every
value to its declared dtype (fp16 emulation: a ``tensor<fp16, ...>`` is computed in fp32 and rounded to
fp16 after each op), so a converted package can be checked against the source model without a Mac.

What it is: a reference evaluator following each op's definition in coremltools'
``converters/mil/mil/ops/defs/iOS15..iOS18`` docstrings. What it is not: a bit-exact model of any Core
ML backend (the Neural Engine, GPU and CPU each accumulate differently), so compare with a tolerance.

Layout (docs/mil-interpreter.md): ``program`` reads a package, ``interpreter`` runs it (``dtypes``: how
values are held), ``session`` is the ``GraphSession`` for ``open_graph``, ``static_facts`` reads a package
without running it, ``ops/`` holds the op handlers by op family (as coremltools' ``ops/defs``).

Public API: :func:`load_program`, :func:`interpret`, :class:`MILInterpreter`, :class:`MILSession`,
:func:`static_facts`, :data:`SUPPORTED_OPS`, :class:`UnsupportedMILOp`.
"""

from __future__ import annotations

from .interpreter import MILInterpreter, UnsupportedMILOp, interpret
from .ops import SUPPORTED_OPS
from .program import load_program
from .session import MILSession
from .static_facts import static_facts

__all__ = [
    "SUPPORTED_OPS",
    "MILInterpreter",
    "MILSession",
    "UnsupportedMILOp",
    "interpret",
    "load_program",
    "static_facts",
]
