"""Small named graph rewrites for mobile targets, applied to PyTorch modules before conversion.

Each pass takes a module and returns a module with the same numerics (within the tolerance its test
states). Passes never change the caller's module: they work on a structural copy that shares the
parameter tensors, so the original stays the reference for verification and no weights are copied.
"""

from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from mobilesd.errors import MobileSDError

PASSES: dict[str, Callable[[nn.Module], nn.Module]] = {}


def register(name: str):
    def deco(fn):
        PASSES[name] = fn
        return fn
    return deco


def share_params_copy(module: nn.Module) -> nn.Module:
    """A deep copy of the module tree whose parameters and buffers are the original tensors."""
    memo = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    return copy.deepcopy(module, memo)


def replace_modules(module: nn.Module, match: Callable[[nn.Module], bool],
                    build: Callable[[nn.Module], nn.Module]) -> int:
    """Replace (in place) every submodule for which ``match`` holds by ``build(old)``. Returns the count."""
    count = 0
    for name, child in list(module.named_children()):
        if match(child):
            setattr(module, name, build(child))
            count += 1
        else:
            count += replace_modules(child, match, build)
    return count


def apply_passes(module: nn.Module, names: list[str]) -> nn.Module:
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise MobileSDError(f"unknown pass(es) {unknown}", f"available: {sorted(PASSES)}")
    out = share_params_copy(module)
    for name in names:
        out = PASSES[name](out)
    return out


# populate the registry
from mobilesd.passes import attention, finite_mask, gelu, group_norm, split_einsum  # noqa: E402,F401

