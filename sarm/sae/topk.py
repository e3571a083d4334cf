"""TopK sparse autoencoder (Gao et al. 2024), the dictionary SARM's reward head reads.

    x' = standardize(x)                    (optional: per-token, over the hidden dim, no affine)
    pre = (x' - b_dec) @ W_enc + b_enc      W_enc: [d_in, n_latents]
    z = TopK(ReLU(pre))                     keep the k largest, zero the rest
    x̂' = z @ W_dec + b_dec                 W_dec: [n_latents, d_in], rows kept at unit norm

Parameter names and orientations follow SAELens, so the saved file reads in that ecosystem.
The input standardization is part of the SAE (``input_norm``), so a saved SAE reads raw hidden
states; its reconstruction lives in the standardized space, where FVU is measured.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6  # the SARM paper's standardization epsilon


class SAEOutput(NamedTuple):
    x: torch.Tensor  # the preprocessed input the SAE reconstructs
    x_hat: torch.Tensor  # its reconstruction
    values: torch.Tensor  # [..., k] active latents' values (after ReLU)
    indices: torch.Tensor  # [..., k] their indices


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-token standardization over the hidden dimension: (x - mean) / (std + 1e-6)."""
    x = x.float()
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / (x.std(-1, keepdim=True, unbiased=False) + EPS)


class TopKSAE(nn.Module):
    """A TopK SAE.

    Args:
        d_in: width of the hidden states it reads.
        n_latents: dictionary size.
        k: active latents per token.
        input_norm: ``"standardize"`` (per token, as SARM does) or ``"none"``.
    """

    def __init__(self, d_in: int, n_latents: int, k: int, input_norm: str = "standardize"):
        super().__init__()
        if not 0 < k <= n_latents:
            raise ValueError(f"k = {k} must be in 1..n_latents ({n_latents})")
        if input_norm not in ("standardize", "none"):
            raise ValueError(f"input_norm = {input_norm!r}: expected 'standardize' or 'none'")
        self.d_in, self.n_latents, self.k, self.input_norm = d_in, n_latents, k, input_norm
        self.W_enc = nn.Parameter(torch.empty(d_in, n_latents))
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.empty(n_latents, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Decoder rows at unit norm, encoder initialized as the decoder's transpose (Gao et al.).
        nn.init.kaiming_uniform_(self.W_dec)
        self.normalize_decoder()
        with torch.no_grad():
            self.W_enc.copy_(self.W_dec.T)
        nn.init.zeros_(self.b_enc)
        nn.init.zeros_(self.b_dec)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x) if self.input_norm == "standardize" else x.float()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of already preprocessed inputs."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def topk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (after ReLU) and indices of the k largest pre-activations."""
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return F.relu(values), indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense ``[..., n_latents]`` latents of raw inputs, zero outside each token's top k."""
        values, indices = self.topk(self.pre_activations(self.preprocess(x)))
        return torch.zeros(*values.shape[:-1], self.n_latents, dtype=values.dtype, device=values.device).scatter_(
            -1, indices, values
        )

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Σ_j values_j · W_dec[indices_j] + b_dec, without materializing the dense latents."""
        shape = values.shape[:-1]
        out = F.embedding_bag(
            indices.reshape(-1, self.k), self.W_dec, per_sample_weights=values.reshape(-1, self.k), mode="sum"
        )
        return out.reshape(*shape, self.d_in) + self.b_dec

    def forward(self, x: torch.Tensor) -> SAEOutput:
        x = self.preprocess(x)
        values, indices = self.topk(self.pre_activations(x))
        return SAEOutput(x, self.decode_sparse(values, indices), values, indices)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row, so the step keeps rows at unit norm."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec

    def config(self) -> dict:
        return {"architecture": "topk", "d_in": self.d_in, "d_sae": self.n_latents, "k": self.k,
                "input_norm": self.input_norm}
