"""decompose_group_norm: GroupNorm as reshape -> mean -> rsqrt -> affine.

torch's own GroupNorm decomposition (what litert-torch lowers) emits BROADCAST_TO, which the LiteRT GPU
delegate rejects, so UNet and VAE fall back to the CPU. This form uses only RESHAPE, MEAN, SUB, MUL,
ADD and RSQRT with implicit broadcasting, all GPU-supported. (litert-torch's enable_group_norm_composite
crashed the GPU accelerator in our probe.)
"""

from __future__ import annotations

import torch
from torch import nn

from mobilesd.passes import register, replace_modules


class GroupNormDecomposed(nn.Module):
    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps, self.affine = gn.num_groups, gn.eps, gn.affine
        self.weight, self.bias = gn.weight, gn.bias  # shared, not copied

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        g = x.reshape(n, self.num_groups, -1)
        mean = g.mean(dim=-1, keepdim=True)
        centered = g - mean
        var = (centered * centered).mean(dim=-1, keepdim=True)
        y = (centered * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, c) + (1,) * (x.dim() - 2)
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


@register("decompose_group_norm")
def decompose_group_norm(module: nn.Module) -> nn.Module:
    replace_modules(module, lambda m: isinstance(m, nn.GroupNorm), GroupNormDecomposed)
    return module
