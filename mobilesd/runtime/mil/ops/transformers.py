"""scaled_dot_product_attention (coremltools ``ops/defs/iOS18/transformers.py``)."""

from __future__ import annotations

import torch.nn.functional as F

from .registry import register_op


@register_op("scaled_dot_product_attention")
def _sdpa(c):
    q, k, v = c.t("query"), c.t("key"), c.t("value")
    mask = c.t("attn_mask") if c.has("attn_mask") else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
