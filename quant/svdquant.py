"""SVDQuant (Li et al. 2024, "Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models").

Per quantized layer with weight W ([O, I] or [O, I, kh, kw]) and calibrated input x:

1. smoothing (SmoothQuant's migration, from the calibration statistics): per input channel j,
   lambda_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha); the input is multiplied by smooth = 1 / lambda and
   the weight's input channel j by lambda, so W x = (W diag(lambda)) (x / lambda) exactly, with the
   activation outliers moved into the weight. Layers that read the same tensor (q, k, v of one
   self-attention) share one lambda (the weight maximum taken over all of them), so the multiply can be
   folded into the op that made that tensor;
2. low-rank branch: the rank-r truncated SVD of the smoothed weight, W_s ~ up @ down (sqrt of the singular
   values on each side, for fp16 range), kept in 16 bits, with the unquantized smoothed input;
3. the residual W_s - up @ down, whose largest components are gone, is what gets quantized (4 or 8 bits, per
   channel or group) and what the activation quantizer's input (the smoothed x) multiplies.

y = Q(W_res) Q_a(x * smooth) + up(down(x * smooth)) + b. The layer's ``weight`` holds the residual, so the
rest of the machinery (MSE weight scales, QALoRA distillation on the residual with ``--distill``, merging,
saving the integers) is unchanged.

Without quantized activations (A16) there are no activation outliers to move: smoothing is off there, and
only the branch + residual apply.

For export (``export_module``), a layer becomes ``main`` (a plain Linear / Conv2d holding the dequantized
residual, whose integers the converters carry) beside ``lowrank_down`` / ``lowrank_up`` (plain float layers,
fp16 in the graphs: a matmul pair, or a k x k conv down and a 1 x 1 conv up), after a per-channel multiply by
``smooth``; ``fold_smoothing`` moves that multiply into the affine parameters of the LayerNorm / GroupNorm in
front of the layer where the layer is that norm's only reader (with its q/k/v siblings).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from mobilesd.quant.layers import QuantLayer, plain_layer
from mobilesd.quant.quantizers import WeightQuantizer

DEFAULT_ALPHA = 0.5          # SmoothQuant / SVDQuant's migration strength
LAMBDA_RANGE = (1e-4, 1e4)   # smoothing factors are clamped: a dead channel (max |x| = 0) keeps lambda 1


def layer_rank(weight: torch.Tensor, rank: int) -> int:
    """The branch rank of one layer: ``rank``, at most a quarter of the smaller side of the [O, I*kh*kw]
    matrix (a branch of near-full rank would be the float layer again, at several times the bytes)."""
    o, n = weight.shape[0], weight[0].numel()
    return max(0, min(rank, min(o, n) // 4))


def weight_channel_max(weight: torch.Tensor) -> torch.Tensor:
    """max |W| over every dimension but the input channel (dim 1)."""
    return weight.abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1)


def smoothing_factors(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """lambda_j = max|x_j|^alpha / max|W_j|^(1 - alpha), clamped; 1 where a channel never fires (or has no
    weight)."""
    lam = act_max.clamp_min(1e-12).pow(alpha) / weight_max.clamp_min(1e-12).pow(1 - alpha)
    dead = (act_max <= 0) | (weight_max <= 0)
    return torch.where(dead, torch.ones_like(lam), lam.clamp(*LAMBDA_RANGE))


def low_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of the rank-r truncated SVD of ``weight`` viewed as [O, I*kh*kw], shaped as layers: down
    [r, I(, kh, kw)], up [O, r(, 1, 1)]; up @ down is the best rank-r approximation (Eckart-Young)."""
    o = weight.shape[0]
    u, s, vh = torch.linalg.svd(weight.double().reshape(o, -1), full_matrices=False)
    root = s[:rank].sqrt()
    up = (u[:, :rank] * root).float()
    down = (root[:, None] * vh[:rank]).float()
    if weight.dim() == 4:
        return down.reshape(rank, *weight.shape[1:]), up.reshape(o, rank, 1, 1)
    return down, up


def sharing_groups(names: list[str], act_max: dict[str, torch.Tensor]) -> list[list[str]]:
    """Layers that read the same tensor: siblings (same parent module) with bit-identical per-channel input
    maxima, e.g. attn1.to_q / to_k / to_v. Exact equality of whole max vectors from independent tensors
    does not happen by chance, so it identifies a shared input without tracing the graph."""
    groups: dict[tuple, list[str]] = {}
    for n in names:
        parent = n.rsplit(".", 1)[0] if "." in n else ""
        key = (parent, tuple(act_max[n].tolist()))
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def decompose(layers: dict[str, QuantLayer], rank: int, act_max: dict[str, torch.Tensor] | None,
              alpha: float = DEFAULT_ALPHA) -> dict[str, dict]:
    """Turn each layer into an SVDQuant layer in place: smoothing (when ``act_max`` has its input's per-channel
    maxima), rank-r branch, residual as ``weight`` with fresh MSE scales. Returns per-layer facts for the
    config: {name: {"rank", "smoothed", "smooth_group", "residual_energy"}}."""
    info: dict[str, dict] = {}
    targets = [n for n, q in layers.items() if q.weight_quant is not None and layer_rank(q.weight, rank) > 0]
    lam: dict[str, torch.Tensor] = {}
    group_of: dict[str, list[str]] = {}
    if act_max:
        smoothable = [n for n in targets if n in act_max]
        for group in sharing_groups(smoothable, act_max):
            wmax = torch.stack([weight_channel_max(layers[n].weight) for n in group]).amax(0)
            shared = smoothing_factors(act_max[group[0]], wmax, alpha)
            for n in group:
                lam[n] = shared
                group_of[n] = group
    for n in targets:
        q = layers[n]
        w = q.weight.detach().float()
        smooth = None
        if n in lam:
            shape = (1, -1) + (1,) * (w.dim() - 2)
            w = w * lam[n].reshape(shape)
            smooth = 1.0 / lam[n]
        r = layer_rank(w, rank)
        down, up = low_rank(w, r)
        residual = w - (up.reshape(w.shape[0], r) @ down.reshape(r, -1)).reshape(w.shape)
        q.weight.data = residual.contiguous()
        q.set_lowrank(down, up, smooth)
        wq = q.weight_quant
        q.weight_quant = WeightQuantizer(q.weight, wq.bits, wq.symmetric, wq.group_size)
        info[n] = {"rank": r, "smoothed": smooth is not None,
                   "smooth_group": group_of.get(n, [n]) if smooth is not None else None,
                   "residual_energy": round(float(residual.pow(2).sum() / w.pow(2).sum().clamp_min(1e-30)), 6)}
    return info


# ---------------------------------------------------------------- export

class SVDQuantExport(nn.Module):
    """What a graph holds for one SVDQuant layer: [x * smooth] -> main (integers) + lowrank_up(lowrank_down(x)).

    ``act_quant`` (``--simulate-activations``) fake-quantizes the main branch's input only, as in PyTorch."""

    def __init__(self, q: QuantLayer, act_quant: nn.Module | None = None):
        super().__init__()
        self.kind = q.kind
        self.main = plain_layer(q)
        r = q.lowrank_down.shape[0]
        if q.kind == "linear":
            self.lowrank_down = nn.Linear(q.weight.shape[1], r, bias=False)
            self.lowrank_up = nn.Linear(r, q.weight.shape[0], bias=False)
        else:
            self.lowrank_down = nn.Conv2d(q.weight.shape[1] * q.groups, r, q.weight.shape[2:], q.stride, q.padding,
                                          q.dilation, q.groups, bias=False)
            self.lowrank_up = nn.Conv2d(r, q.weight.shape[0], 1, bias=False)
        self.lowrank_down.weight = nn.Parameter(q.lowrank_down.detach().clone(), requires_grad=False)
        self.lowrank_up.weight = nn.Parameter(q.lowrank_up.detach().clone(), requires_grad=False)
        smooth = None if q.smooth is None else q.smooth.detach().clone()
        if smooth is not None and q.kind == "conv":
            smooth = smooth.reshape(1, -1, 1, 1)
        self.register_buffer("smooth", smooth)
        self.act_quant = act_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x * self.smooth
        xq = self.act_quant(x) if self.act_quant is not None else x
        # branch first: with main(x) + branch(x), the LiteRT GPU delegate's node merging fails on a LayerNorm
        # feeding both FCs ("Unable to parse bc coord for BATCH axis"); this order compiles (same sum in IEEE)
        return self.lowrank_up(self.lowrank_down(x)) + self.main(xq)

    def branch_parameters(self) -> int:
        return self.lowrank_down.weight.numel() + self.lowrank_up.weight.numel()


def export_module(q: QuantLayer, act_quant: nn.Module | None = None) -> nn.Module:
    """The graph form of a quantized layer: ``SVDQuantExport`` for an SVDQuant layer, else the plain layer
    (or the QuantLayer itself when its activation fake-quant is to be simulated)."""
    if q.lowrank_down is not None:
        return SVDQuantExport(q, act_quant)
    return q if act_quant is not None else plain_layer(q)


# Where the smoothing multiply can be folded: the layer's input is the output of this norm (relative to the
# layer's path), and nothing else reads that output but the listed siblings. diffusers' BasicTransformerBlock
# (norm_type "layer_norm", no positional embedding) and Transformer2DModel. Not norm3 -> ff.net.0.proj
# (GEGLU), though it is as exact: litert-torch then folds that LayerNorm's gamma into the projection's weights
# (off our integer grid: not carried) and the LiteRT GPU delegate rejects the resulting graph (measured on the
# tiny model: "Unable to parse bc coord for BATCH axis"); with the multiply kept, both work.
_FOLD_RULES = (
    (re.compile(r"^(?P<block>.+)\.attn1\.to_(q|k|v)$"), "norm1", ("attn1.to_q", "attn1.to_k", "attn1.to_v")),
    (re.compile(r"^(?P<block>.+)\.attn2\.to_q$"), "norm2", ("attn2.to_q",)),
    (re.compile(r"^(?P<block>.+)\.proj_in$"), "norm", ("proj_in",)),
)


def _fold_target(root: nn.Module, name: str):
    """(norm path, the layer paths reading it) for a layer whose input comes straight from a foldable norm."""
    for rx, norm, readers in _FOLD_RULES:
        m = rx.match(name)
        if not m:
            continue
        block_path = m.group("block")
        try:
            block = root.get_submodule(block_path)
            norm_mod = block.get_submodule(norm)
        except AttributeError:
            return None
        if type(block).__name__ == "BasicTransformerBlock" and (
                getattr(block, "norm_type", None) != "layer_norm" or getattr(block, "pos_embed", None) is not None
                or (norm == "norm1" and getattr(block, "only_cross_attention", False))):
            return None
        if not isinstance(norm_mod, (nn.LayerNorm, nn.GroupNorm)) or norm_mod.weight is None or norm_mod.bias is None:
            return None
        return f"{block_path}.{norm}", [f"{block_path}.{r}" for r in readers]
    return None


@torch.no_grad()
def fold_smoothing(root: nn.Module, modules: dict[str, SVDQuantExport]) -> dict:
    """Fold each export layer's ``smooth`` into the norm in front of it where every reader of that norm is an
    SVDQuant export layer with the same multiplier: gamma, beta <- gamma * smooth, beta * smooth, and the
    layers' multiply is dropped. ``modules``: {path under ``root``: SVDQuantExport}. Returns
    {"folded": {norm path: [layers]}, "multiply": [layers that keep the per-channel multiply]}."""
    folded, seen = {}, set()
    for name, mod in modules.items():
        if mod.smooth is None or name in seen:
            continue
        target = _fold_target(root, name)
        if target is None:
            continue
        norm_path, readers = target
        mods = [modules.get(r) for r in readers]
        if any(m is None or m.smooth is None for m in mods):
            continue
        s = mods[0].smooth.reshape(-1)
        if any(not torch.equal(m.smooth.reshape(-1), s) for m in mods):
            continue
        norm = root.get_submodule(norm_path)
        norm.weight.mul_(s)
        norm.bias.mul_(s)
        for r, m in zip(readers, mods):
            m.smooth = None
            seen.add(r)
        folded[norm_path] = readers
    multiply = sorted(n for n, m in modules.items() if m.smooth is not None)
    return {"folded": folded, "multiply": multiply}
