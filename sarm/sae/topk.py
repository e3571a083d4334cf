"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) sparse autoencoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarm.sae.base import SAEOutput, SparseAutoencoder, TopLatents
from sarm.sae.kernels import sparse_decode, topk_encode


def topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's k largest pre-activations (after ReLU), zero the rest."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))


class TopKSAE(SparseAutoencoder):
    """Each token keeps its ``k`` largest pre-activations.

    Args:
        d_in: width of the hidden states it reads.
        n_latents: dictionary size.
        k: active latents per token.
        input_norm: ``"standardize"`` or ``"none"``.
        sparse_kernels: use the sparse encoder/decoder (same values and gradients as the dense
            reference, computed without [batch, n_latents] products in the backward pass).
    """

    architecture = "topk"

    def __init__(self, d_in: int, n_latents: int, k: int, input_norm: str = "standardize", sparse_kernels: bool = True):
        if not 0 < k <= n_latents:
            raise ValueError(f"k = {k} must be in 1..n_latents ({n_latents})")
        super().__init__(d_in, n_latents, input_norm)
        self.k, self.sparse_kernels = k, sparse_kernels

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_activation(pre, self.k)

    def reconstruct(self, x: torch.Tensor) -> SAEOutput:
        if not self.uses_sparse_kernels(x):
            return super().reconstruct(x)
        # Sparse kernels (sarm/sae/kernels.py): one dense encoder matmul, everything else touches only
        # the k selected latents per token; ~1.25-1.4x the cost of that matmul per training step at the paper's widths
        # (scripts/bench_sae.py).
        top = self._top_latents(x)
        values, indices = top.values.reshape(-1, self.k), top.indices.reshape(-1, self.k)
        x_hat = (sparse_decode(values, indices, self.W_dec) + self.b_dec).reshape(x.shape)
        return SAEOutput(x, x_hat, top)

    def encode_compact(self, x: torch.Tensor) -> torch.Tensor | TopLatents:
        x = self.preprocess(x)
        return self._top_latents(x) if self.uses_sparse_kernels(x) else self.activation(self.pre_activations(x))

    def _top_latents(self, x: torch.Tensor) -> TopLatents:
        """The k kept (value, index) pairs per token of a preprocessed input, by the sparse kernel."""
        keep = None if self.latent_mask.all() else self.latent_mask
        values, indices = topk_encode(x.reshape(-1, self.d_in), self.b_dec, self.W_enc, self.b_enc, self.k, keep)
        return TopLatents(values.reshape(*x.shape[:-1], self.k), indices.reshape(*x.shape[:-1], self.k), self.n_latents)

    def uses_sparse_kernels(self, x: torch.Tensor) -> bool:
        """The sparse path runs on CPU (float32/64) and CUDA; elsewhere the dense reference does."""
        if not self.sparse_kernels:
            return False
        return x.device.type == "cuda" or (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64))

    def config(self) -> dict:
        return {**super().config(), "k": self.k}


class BatchTopKSAE(SparseAutoencoder):
    """A batch keeps its ``k · batch`` largest pre-activations, so tokens share a budget of k on average.

    In training the selection is over the batch; a running threshold (EMA of the smallest kept
    activation per batch) replaces it at inference, where each token is encoded on its own:
    f = pre · 1[pre > threshold].

    Args:
        d_in, n_latents, k, input_norm: as for ``TopKSAE``.
        threshold_momentum: EMA momentum of the inference threshold.
    """

    architecture = "batchtopk"

    def __init__(
        self, d_in: int, n_latents: int, k: int, input_norm: str = "standardize", threshold_momentum: float = 0.01
    ):
        if not 0 < k <= n_latents:
            raise ValueError(f"k = {k} must be in 1..n_latents ({n_latents})")
        super().__init__(d_in, n_latents, input_norm)
        self.k, self.threshold_momentum = k, threshold_momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training and self.threshold >= 0:
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))  # masked −inf stays 0, not NaN
        flat = F.relu(pre.reshape(-1, self.n_latents))
        kept = flat.flatten().topk(min(self.k * flat.shape[0], flat.numel()), sorted=False)
        latents = torch.zeros_like(flat).flatten().scatter_(0, kept.indices, kept.values).view_as(flat)
        if self.training:
            with torch.no_grad():
                positive = kept.values[kept.values > 0]
                smallest = positive.min() if positive.numel() else torch.zeros_like(self.threshold)
                start = self.threshold < 0
                self.threshold.copy_(
                    torch.where(start, smallest, torch.lerp(self.threshold, smallest, self.threshold_momentum))
                )
        return latents.view_as(pre)

    def config(self) -> dict:
        return {**super().config(), "k": self.k, "threshold": float(self.threshold)}
