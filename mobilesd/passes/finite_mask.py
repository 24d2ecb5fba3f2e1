"""finite_causal_mask: the CLIP text encoder's causal mask as a finite constant that survives fp16.

transformers' CLIP text model masks future tokens with ``-inf`` (SDPA's ``is_causal``) or
``torch.finfo(float32).min`` (eager). Both are fine in fp32 and both break a GPU that computes in fp16: the
constant is ``-inf`` there (finfo.min overflows), and a softmax over ``-inf`` logits turns into
``inf - inf = NaN``: LiteRT.js on WebGPU with ``precision: 'fp16'`` returns an all-NaN text encoder output
(../shared/PROBES.md), and a phone GPU with fp16 arithmetic may do the same by itself.

This pass gives every CLIP text model an explicit additive causal mask of ``MASK_VALUE`` (``-1e4``), run by
eager attention (matmul, add, softmax: plain ops on every target). ``-1e4`` is exactly representable in fp16,
leaves room for any attention logit (|logit| < 5e4) before fp16 overflows, and is as good as ``-inf`` after
the softmax: ``exp(-1e4 + logit - max)`` underflows to exactly 0 in fp32 and fp16. So in fp32 the
numerics equal the original's (a masked weight was 0 and stays 0).

It is for SD's text encoder, which takes no padding mask (the pipeline pads with EOS and attends causally
only): the model's own ``attention_mask`` argument is not used by the rewritten encoder. Modules without a
CLIP text model (UNet, VAE decoder) pass through unchanged, so every target can list the pass for every graph.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilesd.passes import register

MASK_VALUE = -1e4


def finite_causal_mask(length: int, value: float = MASK_VALUE, dtype=torch.float32) -> torch.Tensor:
    """Additive mask [1, 1, L, L]: 0 on and below the diagonal, ``value`` above it (future tokens).

    Built in the graph from an index comparison and a select, not stored as a constant tensor: the LiteRT GPU
    delegate adds a broadcast [1, 1, 77, 77] constant wrongly (text encoder rel. L2 0.21 vs PyTorch on the
    GPU check, measured), while the SELECT_V2 form, which is also what the original graph holds, gives 1.4e-3.
    """
    index = torch.arange(length)
    visible = index[None, :] <= index[:, None]
    return torch.where(visible, 0.0, float(value))[None, None].to(dtype)


class FiniteMaskEncoder(nn.Module):
    """Wraps a CLIPEncoder: its layers get the finite causal mask instead of the model's -inf / finfo.min one."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs_embeds, attention_mask=None, **kwargs):
        mask = finite_causal_mask(inputs_embeds.shape[1], dtype=inputs_embeds.dtype)
        kwargs.pop("is_causal", None)   # the mask says it; SDPA-style flags are not for eager attention
        return self.encoder(inputs_embeds, attention_mask=mask, **kwargs)


def _clip_text_models(module: nn.Module):
    """CLIP text models (embeddings + CLIPEncoder + final layer norm) not rewritten yet."""
    from transformers.models.clip.modeling_clip import CLIPEncoder

    for m in module.modules():
        encoder = getattr(m, "encoder", None)
        if isinstance(encoder, CLIPEncoder) and hasattr(m, "embeddings") and hasattr(m, "final_layer_norm"):
            yield m


@register("finite_causal_mask")
def finite_mask(module: nn.Module) -> nn.Module:
    for text_model in list(_clip_text_models(module)):
        config = text_model.config
        text_model.encoder = FiniteMaskEncoder(text_model.encoder)
        # eager attention: matmul, add the mask, softmax, plain ops on every converter (each lowers SDPA its own
        # way, litert-torch with a -inf constant). The config belongs to this structural copy, not the caller's.
        config._attn_implementation = "eager"
    return module
