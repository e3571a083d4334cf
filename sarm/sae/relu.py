"""ReLU SAE, trained with an L1 (or, under p-annealing, Lp^p) penalty on decoder-norm-weighted latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarm.sae.base import SparseAutoencoder


class ReLUSAE(SparseAutoencoder):
    """f = ReLU(pre). Sparsity comes from the training loss's penalty, not from the activation."""

    architecture = "relu"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return F.relu(pre)


def sparsity_penalty(latents: torch.Tensor, W_dec: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """S_p = mean over tokens of Σ_i (f_i · ‖W_dec,i‖)^p: L1 at p = 1, the "Lp^p" form below it.

    Weighting by decoder norms keeps the penalty honest if rows are not at unit norm (a latent
    cannot shrink its activation and grow its decoder row to evade the penalty).
    """
    weighted = latents * W_dec.norm(dim=1)
    if p == 1.0:
        return weighted.sum(-1).mean()
    # (x + eps)^p − eps^p: zero at 0 and a finite gradient there for p < 1.
    eps = 1e-8
    return ((weighted + eps).pow(p) - eps**p).sum(-1).mean()
