"""Fake quantizers: weights per output channel (or group-wise), activations per tensor with a learnable step.

Conventions (the exporters rely on them):
- integers are signed. Symmetric weights use the narrow range [-(2^(b-1)-1), 2^(b-1)-1] (int8: +-127,
  the range TFLite and Core ML expect for symmetric weights) with zero point 0; asymmetric weights use
  [-2^(b-1), 2^(b-1)-1] and an integer zero point, w = scale * (q - zero_point).
- a weight's scale has the weight's rank: [O, 1, ...] per channel, [O, I/g, 1, ...] group-wise (groups of g
  input channels), so ``scale * (q - zp)`` broadcasts.
- activations are symmetric per tensor, x_q = s * clamp(round(x / s), -2^(b-1), 2^(b-1)-1), with the
  step size s trained by LSQ (Esser et al. 2020): straight-through rounding, gradient scale 1/sqrt(N*Qp).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (straight-through estimator)."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, gradient multiplied by ``scale`` backward (LSQ's step-size gradient scaling)."""
    return (x - x * scale).detach() + x * scale


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    top = 2 ** (bits - 1) - 1
    return (-top, top) if symmetric else (-(top + 1), top)


# ---------------------------------------------------------------- weights

def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """View the weight as [O, G, g*k] (G groups of g input channels; k = kernel elements)."""
    o, i = w.shape[0], w.shape[1]
    k = w[0, 0].numel()
    g = group_size or i
    if i % g:
        raise ValueError(f"group size {g} does not divide {i} input channels")
    return w.reshape(o, i // g, g * k)


def _ungroup_param(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[O, G] -> the weight's rank: [O, G, 1, ...] (G == 1: per channel)."""
    return p.reshape(p.shape[0], p.shape[1], *([1] * (w.dim() - 2)))


def _expand_groups(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A [O, G, 1...] parameter repeated over each group's input channels, to the weight's shape."""
    g = w.shape[1] // p.shape[1]
    return p.repeat_interleave(g, dim=1).expand_as(w)


@torch.no_grad()
def init_weight_params(w: torch.Tensor, bits: int, symmetric: bool = True, group_size: int | None = None,
                       grid: int = 40, min_ratio: float = 0.4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point) per channel / group by MSE search over clipping ratios of the weight's range."""
    wg = _grouped(w.float(), group_size)                       # [O, G, n]
    qmin, qmax = int_range(bits, symmetric)
    best_err = torch.full(wg.shape[:2], float("inf"))
    best_s = torch.ones(wg.shape[:2])
    best_z = torch.zeros(wg.shape[:2])
    wmax, wmin = wg.amax(-1), wg.amin(-1)
    for r in torch.linspace(min_ratio, 1.0, grid):
        if symmetric:
            s = (torch.maximum(wmax.abs(), wmin.abs()) * r / qmax).clamp_min(1e-12)
            z = torch.zeros_like(s)
        else:
            hi, lo = wmax.clamp_min(0) * r, wmin.clamp_max(0) * r
            s = ((hi - lo) / (qmax - qmin)).clamp_min(1e-12)
            z = (qmin - lo / s).round()
        q = (wg / s[..., None] + z[..., None]).round().clamp(qmin, qmax)
        err = ((q - z[..., None]) * s[..., None] - wg).pow(2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, z, best_z)
    return _ungroup_param(best_s, w), (None if symmetric else _ungroup_param(best_z, w))


class WeightQuantizer(nn.Module):
    """Fixed scales (MSE-initialised); rounding is straight-through so a LoRA added before it still learns."""

    def __init__(self, weight: torch.Tensor, bits: int, symmetric: bool = True, group_size: int | None = None,
                 init: bool = True):
        super().__init__()
        self.bits, self.symmetric, self.group_size = bits, symmetric, group_size
        if init:
            scale, zp = init_weight_params(weight, bits, symmetric, group_size)
        else:  # scales to be loaded from a saved model
            groups = weight.shape[1] // (group_size or weight.shape[1])
            scale = _ungroup_param(torch.ones(weight.shape[0], groups), weight)
            zp = None if symmetric else torch.zeros_like(scale)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zp if zp is not None else torch.zeros_like(scale))

    @property
    def qrange(self) -> tuple[int, int]:
        return int_range(self.bits, self.symmetric)

    @property
    def learnable(self) -> bool:
        return isinstance(self.scale, nn.Parameter)

    def make_scales_learnable(self) -> nn.Parameter:
        """L4Q (Jeon et al. 2024): the step sizes become parameters trained by LSQ jointly with the LoRA; the
        quantizer's own forward then gives the LSQ gradient (d/ds of s * clamp(round_ste(w / s)) is
        round(w / s) - w / s inside the range, qmin or qmax outside), scaled by 1 / sqrt(n * Qp) with n the
        weights sharing one scale. Zero points (asymmetric weights) stay fixed."""
        if not self.learnable:
            scale = self.scale.detach().clone()
            del self._buffers["scale"]
            self.scale = nn.Parameter(scale)
        return self.scale

    def freeze_scales(self) -> None:
        """Back to a buffer (after training), so saving / exporting sees a plain tensor."""
        if self.learnable:
            scale = self.scale.detach().abs().clamp_min(1e-12)  # what the forward used
            del self._parameters["scale"]
            self.register_buffer("scale", scale)

    def _full(self, w):
        scale = self.scale
        if self.learnable:
            per_scale = w.numel() // scale.numel()
            scale = grad_scale(scale.abs().clamp_min(1e-12), 1.0 / math.sqrt(per_scale * self.qrange[1]))
        return _expand_groups(scale, w), _expand_groups(self.zero_point, w)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s, z = self._full(w)
        qmin, qmax = self.qrange
        q = torch.clamp(round_ste(w / s) + z, qmin, qmax)
        return (q - z) * s

    @torch.no_grad()
    def integers(self, w: torch.Tensor) -> torch.Tensor:
        s, z = self._full(w)
        s = s.detach()
        qmin, qmax = self.qrange
        return (torch.round(w / s) + z).clamp(qmin, qmax).to(torch.int8)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        s, z = self._full(q)
        return (q.float() - z) * s


# ---------------------------------------------------------------- activations

class StepContext:
    """Which sampling step the model is at; shared by all activation quantizers of one model.

    ``index`` selects the per-step step size (a Python int in PyTorch, or an int tensor inside an exported
    graph); ``timestep`` is the raw scheduler timestep (TDQ's generator input while training)."""

    def __init__(self, timesteps: list[int] | None = None):
        self.timesteps = list(timesteps or [])
        self.index: int | torch.Tensor = 0
        self.timestep: torch.Tensor | None = None

    def set_timestep(self, t) -> None:
        t_val = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
        self.timestep = torch.tensor([t_val])
        if self.timesteps:  # nearest table entry: other schedules reuse the closest calibrated step
            self.index = min(range(len(self.timesteps)), key=lambda i: abs(self.timesteps[i] - t_val))


class ActQuantizer(nn.Module):
    """Per-tensor symmetric activation fake-quant with an LSQ-trained step size.

    ``steps`` = 1: one static interval; ``steps`` = n: one step size per sampling step (TALSQ), chosen by
    the shared StepContext; a ``generator`` (TDQ) makes the step size from the timestep instead, until
    ``freeze_table`` evaluates it at the calibrated timesteps."""

    def __init__(self, bits: int, steps: int, context: StepContext, init: torch.Tensor | None = None):
        super().__init__()
        self.bits = bits
        self.context = context
        self.step = nn.Parameter(init.clone().float() if init is not None else torch.ones(steps))
        self.generator: nn.Module | None = None

    @property
    def qrange(self) -> tuple[int, int]:
        return int_range(self.bits, symmetric=False)  # activations use the full signed range

    def current_step(self) -> torch.Tensor:
        if self.generator is not None:
            return self.generator(self.context.timestep).reshape(())
        if self.step.numel() == 1:
            return self.step.reshape(())
        idx = self.context.index
        if isinstance(idx, torch.Tensor):
            # inside an exported graph the step index is an input; select with a one-hot weight made of
            # float ops (SUB, ABS, MAXIMUM, MUL, SUM), which the mobile GPU delegate runs (GATHER it does not)
            pos = torch.arange(self.step.numel(), dtype=self.step.dtype)
            onehot = torch.clamp(1.0 - (pos - idx.reshape(1).to(self.step.dtype)).abs(), min=0.0)
            return (self.step * onehot).sum()
        return self.step[idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qrange
        s = self.current_step().abs().clamp_min(1e-8)
        if self.training:
            s = grad_scale(s, 1.0 / math.sqrt(x.numel() * qmax))
        s = s.reshape([1] * x.dim())  # rank-matched broadcast (the GPU delegate rejects rank-0 runtime operands)
        return torch.clamp(round_ste(x / s), qmin, qmax) * s

    @torch.no_grad()
    def freeze_table(self, timesteps: list[int]) -> None:
        """Replace the generator by its output at each timestep: inference then costs a table lookup."""
        if self.generator is None:
            return
        t = torch.tensor([float(v) for v in timesteps])
        table = torch.stack([self.generator(t[i : i + 1]).reshape(()) for i in range(len(t))])
        self.step = nn.Parameter(table.float())
        self.generator = None
