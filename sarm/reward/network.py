"""Reward networks: hidden states of the backbone → pooled features z → reward = w · z.

    SARMNetwork    z = pool(f(standardize(h)))   f: a frozen (or jointly trained) SAE's TopK latents,
                                                 or its pre-activations (the SARM authors' recipe)
    DenseNetwork   z = pool(standardize(h))      the conventional baseline: a linear head on the
                                                 standardized hidden state of the same backbone

Both are plain ``nn.Module``s that know nothing of Lightning or of the backbone: the training
module (``sarm.reward.module``) and the inference wrapper (``sarm.reward.inference``) feed them
hidden states and response masks.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from sarm.reward.head import RewardHead
from sarm.reward.pooling import Pooling, pool
from sarm.sae.base import SparseAutoencoder, TopLatents, as_dense, standardize

FeatureSource = Literal["latents", "pre"]


class RewardNetwork(nn.Module):
    """Base: subclasses define ``kind``, ``token_features`` and the head's width."""

    kind = "base"

    def __init__(self, n_features: int, pooling: Pooling = "last"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling = {pooling!r}: expected 'last' or 'mean'")
        self.pooling = pooling
        self.head = RewardHead(n_features)

    @property
    def feature_head(self) -> RewardHead:
        """The head whose terms w_i z_i are the per-feature contributions: here the whole head (a residualized
        SARM's is the head of its features only)."""
        return self.head

    def token_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, d] -> [n, n_features]``."""
        raise NotImplementedError

    def compact_token_features(self, hidden: torch.Tensor) -> torch.Tensor | TopLatents:
        """``token_features`` in the cheapest form pooling accepts (see ``sarm.reward.pooling``)."""
        return self.token_features(hidden)

    def features(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features ``[batch, n_features]`` of ``[batch, seq, d]`` hidden states (``[batch, d]``: last
        tokens)."""
        if hidden.dim() == 2:
            return self.token_features(hidden)
        return pool(hidden, mask, self.pooling, self.compact_token_features)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(hidden, mask))

    def config(self) -> dict:
        return {"kind": self.kind, "pooling": self.pooling, "n_features": self.head.weight.numel()}

    def input_size(self) -> int | None:
        """Width of the hidden states it reads."""
        return None


class SARMNetwork(RewardNetwork):
    """The SAE-enhanced reward network: the head reads SAE features.

    Args:
        sae: the SAE (frozen unless trained jointly).
        pooling: ``last`` response token, or ``mean`` of the features over the response tokens.
        features: ``latents`` (TopK activations: each reward a sum over k active features per token)
            or ``pre`` (encoder pre-activations: dense, every latent contributes).
    """

    kind = "sarm"

    def __init__(self, sae: SparseAutoencoder, pooling: Pooling = "last", features: FeatureSource = "latents"):
        if features not in ("latents", "pre"):
            raise ValueError(f"features = {features!r}: expected 'latents' or 'pre'")
        super().__init__(sae.n_latents, pooling)
        self.sae, self.feature_source = sae, features

    def token_features(self, hidden: torch.Tensor) -> torch.Tensor:
        return as_dense(self.compact_token_features(hidden))

    def compact_token_features(self, hidden: torch.Tensor) -> torch.Tensor | TopLatents:
        if self.feature_source == "pre":
            return self.sae.pre_activations(self.sae.preprocess(hidden))
        return self.sae.encode_compact(hidden)  # encoder only: the reward needs no reconstruction

    def config(self) -> dict:
        return {**super().config(), "features": self.feature_source}

    def input_size(self) -> int:
        return self.sae.d_in


class DenseNetwork(RewardNetwork):
    """The dense baseline: reward = w · standardize(h), one weight per hidden dimension."""

    kind = "dense"

    def __init__(self, d_in: int, pooling: Pooling = "last"):
        super().__init__(d_in, pooling)

    def token_features(self, hidden: torch.Tensor) -> torch.Tensor:
        return standardize(hidden)

    def input_size(self) -> int:
        return self.head.weight.numel()
