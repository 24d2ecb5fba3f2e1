"""The op handlers, one module per op family as coremltools splits ``converters/mil/mil/ops/defs/iOS15..iOS18``
(the same file names where a family applies). Importing this package registers every handler in
``registry.HANDLERS``.

Not implemented (UnsupportedMILOp): the block ops of control_flow (``cond``, ``while_loop``, lists),
recurrent (``lstm``, ``gru``, ``rnn``), random, states, classify, ``non_maximum_suppression``, ``affine``,
``crop_resize``, ``resample``, ``space_to_batch`` / ``batch_to_space``, ``conv_quantized``.
"""

from __future__ import annotations

from . import (  # noqa: F401  (imported to register their handlers)
    activation,
    constexpr_ops,
    control_flow,
    conv,
    elementwise_binary,
    elementwise_unary,
    image_resizing,
    linear,
    normalization,
    pool,
    quantization_ops,
    reduction,
    scatter_gather,
    tensor_operation,
    tensor_transformation,
    transformers,
)
from .registry import HANDLERS, MOVES_VALUES

SUPPORTED_OPS: frozenset[str] = frozenset(HANDLERS)

__all__ = ["HANDLERS", "MOVES_VALUES", "SUPPORTED_OPS"]
