"""The sparse scalar head: reward = w · z over SAE latents, so each reward is an exact sum of features."""

from __future__ import annotations

import torch
from torch import nn


class SparseRewardHead(nn.Module):
    """A linear map from latents to a scalar reward, without bias and initialized at zero (SARM).

    No bias means reward = Σ_i w_i z_i with nothing left over: ``contributions(z).sum(-1)`` is the reward.
    """

    def __init__(self, n_latents: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_latents))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight

    def contributions(self, z: torch.Tensor) -> torch.Tensor:
        """Per-feature terms w_i · z_i, ``[..., n_latents]``."""
        return z * self.weight
