"""Quantized Linear / Conv2d with an optional QALoRA branch merged *before* weight fake-quant.

EfficientDM's QALoRA: the effective weight is Q(W + up @ down), so at the end the LoRA merges into the
quantized integers at no inference cost. Conv LoRA is a k x k conv down to rank r, then a 1 x 1 conv up,
whose product is again a k x k kernel.

GraLoRA (Jung et al. 2025, ``add_lora(..., blocks=k)``): the weight (viewed as [O, I*kh*kw], input channels
grouped with their kernel elements) is split into k x k blocks, each with its own low-rank pair of rank r / k;
the k^2 pairs have exactly the parameters of one rank-r LoRA, r * (O + I*kh*kw), but the delta can reach rank
k*(r/k) per block row and adapts each block on its own. It merges before quantization like QALoRA.

SVDQuant (Li et al. 2024; ``mobilesd.quant.svdquant``): a layer may also hold a per-input-channel smoothing
vector and a fixed 16-bit low-rank branch; ``weight`` is then the residual that is quantized, and the forward
is y = Q(W_res)·Q_a(x * smooth) + up(down(x * smooth)) + b.

Written by hand rather than with peft: peft's LoRA layers add the branch to the base layer's *output*
(y = base(x) + B(A(x))), which cannot express "merge into the weight, then quantize"; doing it through
peft's custom-module hook would still need this whole forward, and would keep peft's wrappers in the
saved model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mobilesd.quant.quantizers import ActQuantizer, WeightQuantizer


class QuantLayer(nn.Module):
    """Wraps a Linear or Conv2d; keeps its float weight (frozen) and bias."""

    kind = ""

    def __init__(self, layer: nn.Module, weight_bits: int | None, symmetric: bool = True,
                 group_size: int | None = None, init: bool = True):
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.weight_quant = (WeightQuantizer(self.weight, weight_bits, symmetric, group_size, init)
                             if weight_bits else None)
        self.act_quant: ActQuantizer | None = None
        self.lora_down: torch.Tensor | None = None
        self.lora_up: torch.Tensor | None = None
        self.lora_blocks = 1           # GraLoRA's k (1: plain LoRA)
        # SVDQuant: input smoothing (multiplier per input channel) and the fixed 16-bit low-rank branch
        self.register_buffer("smooth", None)
        self.register_buffer("lowrank_down", None)
        self.register_buffer("lowrank_up", None)
        self.merged = False  # True: self.weight already holds the quantized weight

    # -- LoRA
    def add_lora(self, rank: int, generator: torch.Generator | None = None, blocks: int = 1) -> int:
        """down: Kaiming-uniform (as in LoRA), up: zero, so training starts from the PTQ model. ``blocks`` k > 1:
        GraLoRA's k x k granular pairs of rank r / k, where k divides O, I and r (else plain LoRA). Returns the
        k used."""
        rank = min(rank, *self._lora_dims())
        o, i = self.weight.shape[0], self.weight.shape[1]
        k = blocks if blocks > 1 and o % blocks == 0 and i % blocks == 0 and rank % blocks == 0 else 1
        self.lora_blocks = k
        if k == 1:
            down = torch.empty(self._down_shape(rank))
            nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
            self.lora_down = nn.Parameter(down)
            self.lora_up = nn.Parameter(torch.zeros(self._up_shape(rank)))
            return 1
        kernel = self.weight[0, 0].numel()
        down = torch.empty(k * k * (rank // k), (i // k) * kernel)   # fan-in of each block: its input group
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
        self.lora_down = nn.Parameter(down.reshape(k, k, rank // k, (i // k) * kernel))
        self.lora_up = nn.Parameter(torch.zeros(k, k, o // k, rank // k))
        return k

    def lora_delta(self) -> torch.Tensor:
        o = self.weight.shape[0]
        if self.lora_blocks > 1:
            # block (a, b) of the [O, I*K] delta = up[a, b] @ down[a, b]; rows a-major, input channels b-major
            k = self.lora_blocks
            blocks = torch.einsum("abor,abrc->aobc", self.lora_up, self.lora_down)   # [k, O/k, k, (I/k)*K]
            i = self.weight.shape[1]
            return blocks.reshape(o, k, i // k, -1).reshape(self.weight.shape)
        r = self.lora_down.shape[0]
        return (self.lora_up.reshape(o, r) @ self.lora_down.reshape(r, -1)).reshape(self.weight.shape)

    # -- SVDQuant
    def set_lowrank(self, down: torch.Tensor, up: torch.Tensor, smooth: torch.Tensor | None) -> None:
        """The fixed branch (down: [r, I] / [r, I, kh, kw], up: [O, r] / [O, r, 1, 1]) and the smoothing
        multiplier ([I]); buffers, so they follow .to() and state_dict but never train."""
        self.lowrank_down = down.detach().float().contiguous()
        self.lowrank_up = up.detach().float().contiguous()
        self.smooth = None if smooth is None else smooth.detach().float().contiguous()

    def lowrank_delta(self) -> torch.Tensor:
        """up @ down as a weight of this layer's shape (the branch's contribution to the smoothed weight)."""
        o, r = self.weight.shape[0], self.lowrank_down.shape[0]
        return (self.lowrank_up.reshape(o, r) @ self.lowrank_down.reshape(r, -1)).reshape(self.weight.shape)

    def smooth_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is None:
            return x
        return x * (self.smooth if self.kind == "linear" else self.smooth.reshape(1, -1, 1, 1))

    def effective_weight(self) -> torch.Tensor:
        if self.merged:
            return self.weight
        w = self.weight
        if self.lora_down is not None:
            w = w + self.lora_delta()
        return self.weight_quant(w) if self.weight_quant is not None else w

    @torch.no_grad()
    def merge(self) -> None:
        """Fold LoRA and weight fake-quant into ``weight`` (exactly Q(W + up @ down))."""
        if self.merged:
            return
        w = self.weight + (self.lora_delta() if self.lora_down is not None else 0)
        self.weight.data = self.weight_quant(w) if self.weight_quant is not None else w
        self.integers = self.weight_quant.integers(w) if self.weight_quant is not None else None
        self.merged = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smooth_input(x)
        xq = self.act_quant(x) if self.act_quant is not None else x
        y = self._op(xq, self.effective_weight())
        if self.lowrank_down is not None:   # SVDQuant: the 16-bit branch sees the unquantized (smoothed) input
            y = y + self.lowrank_branch(x)
        return y


class QuantLinear(QuantLayer):
    kind = "linear"

    def _lora_dims(self):
        return self.weight.shape[0], self.weight.shape[1]

    def _down_shape(self, r):
        return (r, self.weight.shape[1])

    def _up_shape(self, r):
        return (self.weight.shape[0], r)

    def _op(self, x, w):
        return F.linear(x, w, self.bias)

    def lowrank_branch(self, x):
        return F.linear(F.linear(x, self.lowrank_down), self.lowrank_up)


class QuantConv2d(QuantLayer):
    kind = "conv"

    def __init__(self, layer: nn.Conv2d, *args, **kwargs):
        super().__init__(layer, *args, **kwargs)
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        if layer.padding_mode != "zeros":
            raise ValueError(f"padding_mode {layer.padding_mode!r} is not supported")

    def _lora_dims(self):
        return self.weight.shape[0], self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]

    def _down_shape(self, r):
        return (r, *self.weight.shape[1:])      # k x k conv down to rank r

    def _up_shape(self, r):
        return (self.weight.shape[0], r, 1, 1)  # 1 x 1 conv up

    def _op(self, x, w):
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def lowrank_branch(self, x: torch.Tensor) -> torch.Tensor:
        """SVDQuant's branch: k x k conv down to rank r (the layer's stride / padding), then 1 x 1 conv up."""
        h = F.conv2d(x, self.lowrank_down, None, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(h, self.lowrank_up)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA as two convs (down k x k, up 1 x 1): equal to conv with ``lora_delta()``."""
        h = F.conv2d(x, self.lora_down, None, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(h, self.lora_up)


def wrap(layer: nn.Module, weight_bits: int | None, symmetric: bool = True,
         group_size: int | None = None, init: bool = True) -> QuantLayer:
    """``init`` False skips the MSE scale search (scales about to be loaded)."""
    if isinstance(layer, nn.Conv2d):
        return QuantConv2d(layer, weight_bits, symmetric, group_size, init)
    if isinstance(layer, nn.Linear):
        return QuantLinear(layer, weight_bits, symmetric, group_size, init)
    raise TypeError(f"cannot quantize {type(layer).__name__}")


def plain_layer(q: QuantLayer) -> nn.Module:
    """A plain Linear / Conv2d holding the (merged, quantized) weight: what a weight-only graph contains."""
    w = q.effective_weight().detach()
    if q.kind == "linear":
        out = nn.Linear(w.shape[1], w.shape[0], bias=q.bias is not None)
    else:
        out = nn.Conv2d(w.shape[1] * q.groups, w.shape[0], w.shape[2:], q.stride, q.padding, q.dilation, q.groups,
                        bias=q.bias is not None)
    out.weight = nn.Parameter(w.clone(), requires_grad=False)
    if q.bias is not None:
        out.bias = nn.Parameter(q.bias.detach().clone(), requires_grad=False)
    return out
