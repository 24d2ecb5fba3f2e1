"""split_einsum_attention: the UNet's transformer blocks in Apple's Neural Engine layout.

The layout of Apple's ml-stable-diffusion (``python_coreml_stable_diffusion/unet.py``, attention
implementation ``SPLIT_EINSUM``), which follows Apple's "Deploying Transformers on the Apple Neural
Engine" (2022) guidelines:

- activations stay channels-first 4D, ``(B, C, 1, S)`` (S = H*W tokens, or the 77 text tokens): the
  Neural Engine's native layout is (B, C, H, W) with the last axis contiguous, and rank-3 (B, S, C)
  tensors of a plain transformer force transposes and badly aligned buffers;
- every linear layer is a 1x1 convolution (the same weights, viewed as ``[O, I, 1, 1]``);
- layer norm normalises over the channel axis (axis 1);
- attention is split per head (channel slices of q, k, v) and computed with two einsums per head,
  ``bchq,bkhc->bkhq`` (scores, softmax over the key axis 1) and ``bkhq,bchk->bchq`` (values), which
  Core ML converts to its native einsum op, and the heads are concatenated along channels.

Only the transformer blocks change: the GroupNorm + proj_in in front of them and proj_out + residual
behind them keep their diffusers form (proj_in/proj_out are 1x1 convs in SD 1.x, linears in SD 2.x: both
become convs here). Parameters are shared with the original (no copies, and parameter names in
``named_parameters()`` are unchanged, so quantized-weight tables keyed by name still apply). The module
is numerically the same function: the test bounds the difference at float32 rounding (tests/test_split_einsum.py).

Supported: diffusers ``Transformer2DModel`` with continuous input and ``BasicTransformerBlock`` of
``norm_type="layer_norm"`` (every SD 1.x / 2.x UNet). Anything else is a MobileSDError naming the feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobilesd.errors import MobileSDError
from mobilesd.passes import register


def _conv1x1(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A Linear (weight [O, I]) or 1x1 Conv2d applied to (B, I, 1, S) as a 1x1 convolution."""
    w = layer.weight
    if w.dim() == 2:
        w = w[:, :, None, None]
    return F.conv2d(x, w, layer.bias)


class LayerNormANE(nn.Module):
    """nn.LayerNorm over the channel axis of a (B, C, 1, S) tensor (weights shared)."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise MobileSDError("split_einsum_attention: layer norm over more than one axis is not supported")
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x):
        mean = x.mean(dim=1, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dim=1, keepdim=True)
        out = centered * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class AttentionANE(nn.Module):
    """diffusers Attention (to_q/k/v, to_out) on (B, C, 1, S), heads split with einsum."""

    def __init__(self, attn):
        super().__init__()
        for bad, what in ((attn.spatial_norm is not None, "spatial norm"), (attn.group_norm is not None, "group norm"),
                          (attn.norm_cross, "cross norm"), (attn.residual_connection, "residual connection"),
                          (getattr(attn, "norm_q", None) is not None, "q/k norm"),
                          (getattr(attn, "add_q_proj", None) is not None, "added k/v projections")):
            if bad:
                raise MobileSDError(f"split_einsum_attention: attention with {what} is not supported",
                                    "use --attention original")
        self.to_q, self.to_k, self.to_v = attn.to_q, attn.to_k, attn.to_v
        self.to_out = attn.to_out  # [Linear, Dropout]
        self.heads = attn.heads
        self.scale = attn.scale
        self.rescale = attn.rescale_output_factor

    def forward(self, x, context=None):
        ctx = x if context is None else context
        q, k, v = _conv1x1(x, self.to_q), _conv1x1(ctx, self.to_k), _conv1x1(ctx, self.to_v)
        d = q.shape[1] // self.heads
        k = k.transpose(1, 3)  # (B, Sk, 1, C)
        outs = []
        for h in range(self.heads):
            qh = q[:, h * d:(h + 1) * d]          # (B, d, 1, Sq)
            kh = k[:, :, :, h * d:(h + 1) * d]    # (B, Sk, 1, d)
            vh = v[:, h * d:(h + 1) * d]          # (B, d, 1, Sk)
            w = torch.einsum("bchq,bkhc->bkhq", qh, kh) * self.scale  # (B, Sk, 1, Sq)
            w = w.softmax(dim=1)
            outs.append(torch.einsum("bkhq,bchk->bchq", w, vh))        # (B, d, 1, Sq)
        out = _conv1x1(torch.cat(outs, dim=1), self.to_out[0])
        return out / self.rescale if self.rescale != 1.0 else out


class FeedForwardANE(nn.Module):
    """diffusers FeedForward (GEGLU / GELU / Linear / Dropout) on (B, C, 1, S)."""

    def __init__(self, ff):
        super().__init__()
        from diffusers.models.activations import GEGLU, GELU

        for m in ff.net:
            if not isinstance(m, (GEGLU, GELU, nn.Linear, nn.Dropout)):
                raise MobileSDError(f"split_einsum_attention: feed-forward layer {type(m).__name__} is not supported",
                                    "use --attention original")
        self.net = ff.net
        self._geglu, self._gelu = GEGLU, GELU

    def forward(self, x):
        for m in self.net:
            if isinstance(m, self._geglu):
                h, gate = _conv1x1(x, m.proj).chunk(2, dim=1)
                x = h * m.gelu(gate)  # m.gelu: passes such as approximate_gelu override it per instance
            elif isinstance(m, self._gelu):
                x = F.gelu(_conv1x1(x, m.proj), approximate=m.approximate)
            elif isinstance(m, nn.Linear):
                x = _conv1x1(x, m)
            # dropout: identity at inference
        return x


class BasicTransformerBlockANE(nn.Module):
    def __init__(self, block):
        super().__init__()
        if block.norm_type != "layer_norm":
            raise MobileSDError(f"split_einsum_attention: transformer norm type {block.norm_type!r} is not supported",
                                "use --attention original")
        if getattr(block, "pos_embed", None) is not None or getattr(block, "ff_norm", None) is not None:
            raise MobileSDError("split_einsum_attention: this transformer block variant is not supported",
                                "use --attention original")
        self.only_cross_attention = block.only_cross_attention
        self.norm1, self.attn1 = LayerNormANE(block.norm1), AttentionANE(block.attn1)
        self.norm2 = LayerNormANE(block.norm2) if block.attn2 is not None else None
        self.attn2 = AttentionANE(block.attn2) if block.attn2 is not None else None
        self.norm3, self.ff = LayerNormANE(block.norm3), FeedForwardANE(block.ff)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x), context if self.only_cross_attention else None) + x
        if self.attn2 is not None:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DANE(nn.Module):
    """Drop-in for diffusers Transformer2DModel (continuous input) as the UNet blocks call it."""

    def __init__(self, tm):
        super().__init__()
        if not getattr(tm, "is_input_continuous", False):
            raise MobileSDError("split_einsum_attention: only continuous-input Transformer2DModel is supported",
                                "use --attention original")
        for proj in (tm.proj_in, tm.proj_out):
            if isinstance(proj, nn.Conv2d) and tuple(proj.kernel_size) != (1, 1):
                raise MobileSDError("split_einsum_attention: proj_in/proj_out convs must be 1x1",
                                    "use --attention original")
        self.norm, self.proj_in, self.proj_out = tm.norm, tm.proj_in, tm.proj_out
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlockANE(b) for b in tm.transformer_blocks)

    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, added_cond_kwargs=None,
                class_labels=None, cross_attention_kwargs=None, attention_mask=None, encoder_attention_mask=None,
                return_dict: bool = True):
        if attention_mask is not None or encoder_attention_mask is not None:
            raise NotImplementedError("split_einsum_attention: attention masks are not used by SD's UNet")
        b, _, h, w = hidden_states.shape
        residual = hidden_states
        x = _conv1x1(self.norm(hidden_states), self.proj_in)   # 1x1 conv (SD 1.x) or linear (SD 2.x): same math
        x = x.reshape(b, x.shape[1], 1, h * w)                 # (B, C, 1, S)
        ctx = None
        if encoder_hidden_states is not None:                   # (B, 77, D) -> (B, D, 1, 77)
            ctx = encoder_hidden_states.transpose(1, 2).unsqueeze(2)
        for block in self.transformer_blocks:
            x = block(x, ctx)
        x = _conv1x1(x, self.proj_out).reshape(b, -1, h, w)
        out = x + residual
        return (out,) if not return_dict else _Output(out)


class _Output(tuple):
    @property
    def sample(self):
        return self[0]

    def __new__(cls, sample):
        return super().__new__(cls, (sample,))


@register("split_einsum_attention")
def split_einsum_attention(module: nn.Module) -> nn.Module:
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from mobilesd.passes import replace_modules

    replace_modules(module, lambda m: isinstance(m, Transformer2DModel), Transformer2DANE)
    return module
