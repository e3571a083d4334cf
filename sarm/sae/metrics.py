"""SAE quality on held-out activations, as torchmetrics (states are sums, so they reduce across ranks)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ReconstructionMetrics(Metric):
    """FVU, cosine(x, x̂) and relative reconstruction bias over everything seen.

    FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (mean per dimension over all tokens; Gao et al. 2024, arXiv 2406.04093);
    relative reconstruction bias = E‖x̂‖² / E⟨x, x̂⟩ (1 when x̂ is not shrunk or inflated).
    """

    full_state_update = False

    def __init__(self, d_in: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("sq_err", "sum_sq_x", "count", "cosine", "sq_x_hat", "dot"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_x", torch.zeros(d_in, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
        # Out-of-place updates: under ddp_spawn, states may share memory across ranks, and in-place updates count twice.
        self.sq_err = self.sq_err + (x - x_hat).pow(2).sum()
        self.sum_x = self.sum_x + x.sum(0)
        self.sum_sq_x = self.sum_sq_x + x.pow(2).sum()
        self.count = self.count + x.shape[0]
        self.cosine = self.cosine + torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum()
        self.sq_x_hat = self.sq_x_hat + x_hat.pow(2).sum()
        self.dot = self.dot + (x * x_hat).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        total_var = self.sum_sq_x - self.sum_x.pow(2).sum() / self.count
        return {
            "fvu": (self.sq_err / total_var).float(),
            "cosine": (self.cosine / self.count).float(),
            "relative_bias": (self.sq_x_hat / self.dot).float(),
        }


class LatentFrequency(Metric):
    """Per-latent firing counts → L0, dead fraction (never fired) and dense fraction (fires on > 10 %)."""

    full_state_update = False

    def __init__(self, n_latents: int, dense_above: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.dense_above = dense_above
        self.add_state("fired", torch.zeros(n_latents, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fired: torch.Tensor, tokens: int) -> None:
        """``fired[i]``: how many of ``tokens`` tokens latent i was active on (``SAEOutput.firing_counts``)."""
        self.fired = self.fired + fired.double()
        self.count = self.count + tokens

    def compute(self) -> dict[str, torch.Tensor]:
        frequency = self.fired / self.count
        return {
            "l0": frequency.sum().float(),
            "dead_fraction": (frequency == 0).double().mean().float(),
            "dense_fraction": (frequency > self.dense_above).double().mean().float(),
        }
