"""SAE quality on held-out activations, as torchmetrics (states are sums, so they reduce across ranks)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class FractionOfVarianceUnexplained(Metric):
    """FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖², the mean taken per dimension over everything seen."""

    full_state_update = False

    def __init__(self, d_in: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sq_err", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_x", torch.zeros(d_in, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_sq_x", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
        # Out-of-place updates: under ddp_spawn, states may share memory across ranks (BRIEF §6).
        self.sq_err = self.sq_err + (x - x_hat).pow(2).sum()
        self.sum_x = self.sum_x + x.sum(0)
        self.sum_sq_x = self.sum_sq_x + x.pow(2).sum()
        self.count = self.count + x.shape[0]

    def compute(self) -> torch.Tensor:
        total_var = self.sum_sq_x - self.sum_x.pow(2).sum() / self.count
        return (self.sq_err / total_var).float()


class MeanL0(Metric):
    """Mean number of non-zero latents per token."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("active", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.active = self.active + (values > 0).sum()
        self.count = self.count + values[..., 0].numel()

    def compute(self) -> torch.Tensor:
        return (self.active / self.count).float()


class DeadFraction(Metric):
    """Fraction of latents that never fired on the data seen (a fired-mask reduced with max)."""

    full_state_update = False

    def __init__(self, n_latents: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("fired", torch.zeros(n_latents), dist_reduce_fx="max")

    def update(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        hit = torch.zeros_like(self.fired)
        hit[indices[values > 0]] = 1.0
        self.fired = torch.maximum(self.fired, hit)

    def compute(self) -> torch.Tensor:
        return 1.0 - self.fired.mean()
