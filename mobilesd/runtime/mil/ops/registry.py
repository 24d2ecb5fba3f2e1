"""The op handlers by MIL op type, filled by the family modules as they are imported (like coremltools'
``SSAOpRegistry`` and its ``@register_op``).

A handler takes an ``OpContext`` (mobilesd.runtime.mil.interpreter: ``c.t(name)`` an input tensor, ``c.p(name)``
a parameter, ``c.np(name)`` an input as numpy in its declared dtype) and returns a tensor, a numpy array,
or a tuple of them for a multi-output op, computed in fp32 for floats. The interpreter casts and rounds
every result to the op's declared output dtype afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HANDLERS: dict[str, Callable[[Any], Any]] = {}
# op types whose outputs are some of their inputs' values, moved or picked: exact in fp16 when their inputs
# are fp16, so the interpreter skips rounding them
MOVES_VALUES: set[str] = set()


def register(name: str, handler: Callable[[Any], Any], *, moves_values: bool = False) -> None:
    if name in HANDLERS:
        raise RuntimeError(f"MIL op {name!r} has two handlers")
    HANDLERS[name] = handler
    if moves_values:
        MOVES_VALUES.add(name)


def register_op(*names: str, moves_values: bool = False):
    """Decorator: the function handles the op types ``names``."""
    def deco(fn):
        for n in names:
            register(n, fn, moves_values=moves_values)
        return fn
    return deco
