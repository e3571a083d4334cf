"""The scalar reward head: reward = w · z, no bias, so each reward is an exact sum of per-feature terms."""

from __future__ import annotations

import torch
from torch import nn


class RewardHead(nn.Module):
    """A linear map from features to a scalar reward, without bias and initialized at zero (SARM).

    Over SAE latents (SARM), z is sparse and reward = Σ_i w_i z_i is a sum over the few active
    features; over standardized hidden states (the dense baseline), a sum over hidden dimensions.
    No bias means nothing is left over: ``contributions(z).sum(-1)`` is the reward.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight

    def contributions(self, z: torch.Tensor) -> torch.Tensor:
        """Per-feature terms w_i · z_i, ``[..., n_features]``."""
        return z * self.weight

    def nonzero(self) -> int:
        return int((self.weight != 0).sum())
