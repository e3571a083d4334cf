"""What every SAE architecture shares: parameters, input preprocessing, decoder geometry, masking.

    x' = preprocess(x)                 per-token standardization (SARM) or identity
    pre = (x' - b_dec) @ W_enc + b_enc   W_enc: [d_in, n_latents]
    f = activation(pre)                architecture-specific: TopK, BatchTopK, ReLU
    x̂' = f @ W_dec + b_dec             W_dec: [n_latents, d_in], rows kept at unit norm

Names and orientations follow SAELens, with one difference in storage: the encoder's parameter is ``encoder``
``[n_latents, d_in]`` (latent i's direction in row i, as sparsify and ``nn.Linear`` store it) and ``W_enc`` is its
transpose, a view. The sparse backward builds dL/dW_enc one latent row at a time (``sarm/sae/kernels.py``); a
gradient laid out as its parameter is taken as it is, where any other layout costs a transposing copy of the
largest tensor every step (``scripts/bench_sae.py``). Files, SAELens and sparsify see ``W_enc`` only.

``latent_mask`` (all ones unless a callback such as ``AdaptiveTemporalMasking`` sets it) removes latents from the
forward pass entirely: a masked latent's pre-activation is sent to −inf before the activation, so it can neither
fire nor take a TopK slot.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

EPS = 1e-6  # the SARM paper's standardization epsilon


class TopLatents(NamedTuple):
    """Latents held as the k (value, index) pairs per token that a TopK SAE keeps."""

    values: torch.Tensor  # [..., k] activations (ReLU'd: a kept slot may hold 0)
    indices: torch.Tensor  # [..., k] latent ids
    n_latents: int

    def dense(self) -> torch.Tensor:
        shape = (*self.values.shape[:-1], self.n_latents)
        return self.values.new_zeros(shape).scatter_(-1, self.indices, self.values)


def as_dense(latents: torch.Tensor | TopLatents) -> torch.Tensor:
    """``[..., n_latents]`` latents, whichever form they come in."""
    return latents.dense() if isinstance(latents, TopLatents) else latents


class SAEOutput:
    """One forward pass: the input it reconstructs, the reconstruction, the latents.

    ``latents`` is always the dense ``[..., n_latents]`` tensor; on the sparse TopK path it is built
    on first use from ``top`` (the k active per token), which is all training needs.
    ``pre`` holds the dense pre-activations where the path computed them (None on the sparse path).
    """

    def __init__(
        self, x: torch.Tensor, x_hat: torch.Tensor, latents: torch.Tensor | TopLatents, pre: torch.Tensor | None = None
    ):
        self.x, self.x_hat, self.pre = x, x_hat, pre
        self.top = latents if isinstance(latents, TopLatents) else None
        self._dense = None if self.top is not None else latents

    @property
    def latents(self) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.top.dense()
        return self._dense

    def compact_latents(self) -> torch.Tensor | TopLatents:
        """The latents in the cheapest form this output holds, detached (for callbacks)."""
        if self.top is not None:
            return TopLatents(self.top.values.detach(), self.top.indices, self.top.n_latents)
        return self._dense.detach()

    def firing_counts(self) -> torch.Tensor:
        """``[n_latents]``: over all tokens, how many times each latent fired (activation > 0)."""
        if self.top is None:
            return (self.latents.reshape(-1, self.latents.shape[-1]) > 0).sum(0)
        fired = self.top.indices[self.top.values > 0]
        return torch.bincount(fired, minlength=self.top.n_latents)

    def l0(self) -> torch.Tensor:
        """Mean number of active latents per token."""
        active = self.top.values if self.top is not None else self.latents
        return (active > 0).float().sum(-1).mean()


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-token standardization over the hidden dimension: (x - mean) / (std + 1e-6)."""
    x = x.float()
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / (x.std(-1, keepdim=True, unbiased=False) + EPS)


class SparseAutoencoder(nn.Module):
    """Base class; subclasses define ``activation(pre)`` and their ``architecture`` name.

    Args:
        d_in: width of the hidden states it reads.
        n_latents: dictionary size.
        input_norm: ``"standardize"`` (per token, as SARM does) or ``"none"``.
    """

    architecture = "base"

    def __init__(self, d_in: int, n_latents: int, input_norm: str = "standardize"):
        super().__init__()
        if input_norm not in ("standardize", "none"):
            raise ValueError(f"input_norm = {input_norm!r}: expected 'standardize' or 'none'")
        self.d_in, self.n_latents, self.input_norm = d_in, n_latents, input_norm
        # Where its activations came from (``model_name``, ``hook_layer``, ``context_size``), as its file records
        # them: set by the loaders, written again by ``save_sae``. Not state: it does not enter state_dict.
        self.provenance: dict = {}
        self.encoder = nn.Parameter(torch.empty(n_latents, d_in))  # W_encᵀ (module docstring)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.empty(n_latents, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("latent_mask", torch.ones(n_latents, dtype=torch.bool))
        self.reset_parameters()

    @property
    def W_enc(self) -> torch.Tensor:
        """``[d_in, n_latents]``: the encoder as the formulas and SAELens's files have it (a view of ``encoder``;
        write it with ``copy_``, differentiate with respect to ``encoder``)."""
        return self.encoder.t()

    def reset_parameters(self) -> None:
        # Decoder rows at unit norm, encoder initialized as the decoder's transpose (Gao et al.).
        nn.init.kaiming_uniform_(self.W_dec)
        self.normalize_decoder()
        with torch.no_grad():
            self.encoder.copy_(self.W_dec)
        nn.init.zeros_(self.b_enc)
        nn.init.zeros_(self.b_dec)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row, so the step keeps rows at unit norm."""
        if self.W_dec.grad is not None:
            # row-wise dot products as a batched product: no [n, d] temporary (vecdot multiplies, then sums)
            parallel = torch.einsum("nd,nd->n", self.W_dec.grad, self.W_dec).unsqueeze(1)
            self.W_dec.grad.addcmul_(parallel, self.W_dec, value=-1.0)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x) if self.input_norm == "standardize" else x.float()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of already preprocessed inputs; masked latents at −inf."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if not self.latent_mask.all():
            pre = pre.masked_fill(~self.latent_mask, float("-inf"))
        return pre

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.W_dec + self.b_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., n_latents]`` of raw inputs."""
        return self.activation(self.pre_activations(self.preprocess(x)))

    def encode_compact(self, x: torch.Tensor) -> torch.Tensor | TopLatents:
        """Latents of raw inputs in the cheapest form the SAE computes them: (value, index) pairs on
        the sparse TopK path, else the dense tensor. For readers that only need the latents."""
        return self.encode(x)

    def reconstruct(self, x: torch.Tensor) -> SAEOutput:
        """Encode and decode an already preprocessed (or whitened) input."""
        pre = self.pre_activations(x)
        latents = self.activation(pre)
        return SAEOutput(x, self.decode(latents), latents, pre)

    def forward(self, x: torch.Tensor) -> SAEOutput:
        return self.reconstruct(self.preprocess(x))

    def config(self) -> dict:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.n_latents,
            "input_norm": self.input_norm,
        }
