"""explicit_attention: scaled_dot_product_attention as 3D batch matmuls + softmax.

Replaces diffusers' attention processor with one that folds heads into the batch (B*heads, seq, dim),
so the graph holds plain BATCH_MATMUL / SOFTMAX on rank-3 tensors, the layout mobile GPU delegates
handle best, instead of whatever a converter makes of a fused SDPA.
"""

from __future__ import annotations

import torch
from torch import nn

from mobilesd.passes import register


class ExplicitAttnProcessor:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            raise NotImplementedError("explicit_attention: attention masks are not used by SD's UNet")
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.reshape(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        bsz, n_q, inner = q.shape
        heads = attn.heads
        d = inner // heads

        def split(x):  # [B, N, H*d] -> [B*H, N, d]
            return x.reshape(bsz, -1, heads, d).permute(0, 2, 1, 3).reshape(bsz * heads, -1, d)

        q, k, v = split(q), split(k), split(v)
        scores = torch.bmm(q * attn.scale, k.transpose(1, 2))
        probs = scores.softmax(dim=-1)
        out = torch.bmm(probs, v)
        out = out.reshape(bsz, heads, n_q, d).permute(0, 2, 1, 3).reshape(bsz, n_q, inner)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@register("explicit_attention")
def explicit_attention(module: nn.Module) -> nn.Module:
    from diffusers.models.attention_processor import Attention

    for m in module.modules():
        if isinstance(m, Attention):
            m.set_processor(ExplicitAttnProcessor())
    return module
