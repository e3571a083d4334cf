"""JumpReLU SAE (Rajamanoharan et al. 2024, arXiv 2407.14435) at inference: one threshold per latent.

    f_i = pre_i · 1[pre_i > θ_i],   θ_i ≥ 0

SAELens computes ReLU(pre) · 1[pre > θ]; for θ ≥ 0 that is the same value (the loaders clamp a
negative θ to 0, where ReLU would cut anyway). sarm reads such SAEs (Gemma Scope, SAELens's final
BatchTopK files without a recorded k) but does not train their thresholds: θ is a buffer, not a
parameter, so it stays as read.
"""

from __future__ import annotations

import torch

from sarm.sae.base import SparseAutoencoder


class JumpReLUSAE(SparseAutoencoder):
    """``threshold`` ``[n_latents]``: a latent fires when its pre-activation exceeds its own threshold."""

    architecture = "jumprelu"

    def __init__(self, d_in: int, n_latents: int, input_norm: str = "none"):
        super().__init__(d_in, n_latents, input_norm)
        self.register_buffer("threshold", torch.zeros(n_latents))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))  # masked −inf stays 0, not NaN
