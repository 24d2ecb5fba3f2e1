"""TDQ (So et al. 2023): activation intervals generated from the timestep.

Each activation quantizer gets a small generator: Fourier features of t -> MLP -> softplus, whose output
is the quantizer's step size (interval / 2^(b-1)). It is initialised by regression on the calibrated
per-step step sizes, trained with LSQ gradients against the full-precision model (quant/distill.py),
and finally evaluated at the scheduler's timesteps and frozen into a per-step table
(ActQuantizer.freeze_table), so inference costs a table lookup.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TDQGenerator(nn.Module):
    def __init__(self, n_freq: int = 16, hidden: int = 64, max_t: float = 1000.0):
        super().__init__()
        self.max_t = max_t
        # geometric frequencies over [1, 2^(n_freq/2)] cycles across the timestep range
        self.register_buffer("freqs", (2.0 ** torch.linspace(0, n_freq / 2, n_freq)) * math.pi)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def features(self, t: torch.Tensor) -> torch.Tensor:
        x = t.float().reshape(-1, 1) / self.max_t * self.freqs
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Step size(s) for timestep(s) ``t`` (shape [n]); always positive."""
        return F.softplus(self.mlp(self.features(t))).reshape(-1) + 1e-6

    def fit(self, timesteps: list[int], steps: torch.Tensor, iters: int = 300, lr: float = 1e-2) -> float:
        """Regress onto calibrated step sizes (log space, so small and large steps weigh the same).
        Returns the final relative RMS error."""
        t = torch.tensor([float(v) for v in timesteps])
        target = steps.float().clamp_min(1e-6)
        with torch.no_grad():  # start from the mean: softplus^-1(mean)
            m = float(target.mean())
            self.mlp[-1].bias.fill_(math.log(math.expm1(m)) if m < 20 else m)
            self.mlp[-1].weight.mul_(0.01)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        for _ in range(iters):
            opt.zero_grad()
            loss = (torch.log(self(t)) - torch.log(target)).pow(2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(((self(t) - target) / target).pow(2).mean().sqrt())
