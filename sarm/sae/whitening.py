"""PCA whitening of SAE inputs (Saraswatula & Klindt, arXiv 2511.13981), and folding it into an SAE.

Row-vector convention throughout (as ``x @ W_enc`` in ``base.py``): x is ``[..., d]``.
From a sample of (preprocessed) activations, in float64:

    μ = mean(x),   Σ = (x - μ)ᵀ (x - μ) / N = E diag(λ) Eᵀ        (population covariance)
    λ'_i = max(λ_i, 0) + eps · mean(λ)                              (eps is *relative*, see below)
    whiten_matrix   W = E diag(λ')^(-1/2)     [d, d]    z = (x - μ) @ W
    unwhiten_matrix U = diag(λ')^(1/2) Eᵀ     [d, d]    x = z @ U + μ        (U = W⁻¹ exactly: W U = I)

This is the paper's z = D^(-1/2) Eᵀ (x - μ) written for row vectors. ``eps`` is relative to the mean
eigenvalue (= mean per-dimension variance), so the same eps means the same thing for raw residual
streams (norms in the hundreds) and for standardized ones; it keeps directions of (near) zero variance
finite: they are scaled by at most (eps · mean λ)^(-1/2) instead of blowing up. The whitened sample's
covariance is then diag(λ / λ'), which is the identity up to eps.

Where whitening sits: x → ``sae.preprocess`` (per-token standardization or identity) → whiten → the
SAE's encoder/activation/decoder → unwhiten. So fit the whitening on *preprocessed* activations
(``sae.preprocess(x)``); ``whitened_forward`` runs this pipeline.

Folding (``fold_whitening``): whitening is affine, so an SAE trained on z can be rewritten to read the
preprocessed space directly. With the trained SAE's (W_enc, b_enc, W_dec, b_dec) in z-space:

    pre = (z - b_dec) @ W_enc + b_enc
        = ((x - μ) @ W - b_dec @ U @ W) @ W_enc + b_enc            (U W = I)
        = (x - b_dec') @ W_enc' + b_enc
    x̂  = (f @ W_dec + b_dec) @ U + μ = f @ W_dec' + b_dec'

    with  W_enc' = W @ W_enc,   W_dec' = W_dec @ U,   b_dec' = μ + b_dec @ U,   b_enc' = b_enc.

For a standardized SAE (every x sums to 0) the all-ones direction is then dropped from W_enc', with
P = I − 11ᵀ/d:  W_enc'' = P W_enc',  b_enc'' = b_enc − (Σ b_dec') · 1ᵀW_enc'/d  — the same pre-activations for
every x ⟂ 1, without the float rounding along 1 that W (which scales that zero-variance direction by
(eps · mean λ)^(-1/2), 100× at eps 1e-4) would amplify into the latents.

Encoder and decoder share b_dec', so the folded SAE has the usual form and every architecture's
activation (TopK, BatchTopK threshold, ReLU) sees identical pre-activations. The folded decoder rows
are no longer unit norm (they are the z-space unit rows mapped by U); that is expected, so do not
renormalize a folded SAE or keep training it — fold only for export.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sarm.sae.base import SAEOutput, SparseAutoencoder


class PCAWhitening(nn.Module):
    """An affine whitening map z = (x - mean) @ whiten_matrix and its inverse; see the module docstring.

    Build it with ``PCAWhitening.fit(sample)`` or, streaming over a cache, ``CovarianceAccumulator``.
    A bare ``PCAWhitening(d)`` is the identity map (useful before ``load_state_dict``).
    """

    def __init__(self, d: int):
        super().__init__()
        self.d = d
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("whiten_matrix", torch.eye(d))
        self.register_buffer("unwhiten_matrix", torch.eye(d))
        self.register_buffer("eigenvalues", torch.ones(d))  # of Σ, unregularized, descending

    @classmethod
    def fit(cls, sample: torch.Tensor, eps: float = 1e-4) -> PCAWhitening:
        """Fit on a sample ``[N, d]`` (or ``[..., d]``) of preprocessed activations."""
        accumulator = CovarianceAccumulator(sample.shape[-1])
        accumulator.update(sample)
        return accumulator.finalize(eps)

    @classmethod
    def from_moments(cls, mean: torch.Tensor, covariance: torch.Tensor, eps: float = 1e-4) -> PCAWhitening:
        """Build from a mean ``[d]`` and covariance ``[d, d]`` (computed in float64 here)."""
        mean, covariance = mean.double(), covariance.double()
        covariance = (covariance + covariance.T) / 2  # eigh reads one triangle; make sure both agree
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
        scale = eigenvalues.mean()
        if scale <= 0:  # constant data: no variance to be relative to
            scale = torch.ones_like(scale)
        regularized = eigenvalues + eps * scale
        whitening = cls(mean.numel())
        whitening.mean.copy_(mean)
        whitening.whiten_matrix.copy_(eigenvectors * regularized.rsqrt())
        whitening.unwhiten_matrix.copy_(regularized.sqrt()[:, None] * eigenvectors.T)
        whitening.eigenvalues.copy_(eigenvalues)
        return whitening

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) - self.mean) @ self.whiten_matrix

    def unwhiten(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.mean.dtype) @ self.unwhiten_matrix + self.mean

    forward = whiten


class CovarianceAccumulator:
    """Streams batches of ``[..., d]`` activations into a float64 mean and covariance.

    Sums are taken around a fixed shift (the first batch's mean), which avoids the cancellation of
    the plain Σx², Σx formula when a dimension's mean is large compared with its spread.
    """

    def __init__(self, d: int):
        self.d = d
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(d, dtype=torch.float64)
        self.sum_outer = torch.zeros(d, d, dtype=torch.float64)

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        batch = batch.detach().reshape(-1, self.d).to("cpu", torch.float64)
        if batch.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = batch.mean(0)
        centered = batch - self.shift
        self.count += batch.shape[0]
        self.sum += centered.sum(0)
        self.sum_outer += centered.T @ centered

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, population covariance), float64."""
        if self.count == 0:
            raise ValueError("CovarianceAccumulator: no data was added")
        centered_mean = self.sum / self.count
        covariance = self.sum_outer / self.count - torch.outer(centered_mean, centered_mean)
        return self.shift + centered_mean, covariance

    def finalize(self, eps: float = 1e-4) -> PCAWhitening:
        return PCAWhitening.from_moments(*self.moments(), eps=eps)


def whitened_forward(sae: SparseAutoencoder, whitening: PCAWhitening, x: torch.Tensor) -> SAEOutput:
    """Run an SAE that was trained in whitened space on raw inputs.

    x → preprocess → whiten → pre-activations → activation → decode → unwhiten. ``SAEOutput.x`` is
    the preprocessed (unwhitened) input and ``x_hat`` its reconstruction in that same space, so the
    output is directly comparable with ``fold_whitening(sae, whitening)(x)``.
    """
    x = sae.preprocess(x)
    out = sae.reconstruct(whitening.whiten(x).to(sae.W_enc.dtype))
    latents = out.top if out.top is not None else out.latents
    return SAEOutput(x, whitening.unwhiten(out.x_hat).to(x.dtype), latents, out.pre)


@torch.no_grad()
def fold_whitening(sae: SparseAutoencoder, whitening: PCAWhitening) -> SparseAutoencoder:
    """A copy of ``sae`` (same class, config, mask, threshold, train/eval mode) that reads the
    preprocessed space directly: ``folded(x) == whitened_forward(sae, whitening, x)``.

    See the module docstring for the formulas; the products are taken in float64.
    """
    if whitening.d != sae.d_in:
        raise ValueError(f"whitening is {whitening.d}-dimensional but the SAE reads d_in = {sae.d_in}")
    W, U, mean = whitening.whiten_matrix.double(), whitening.unwhiten_matrix.double(), whitening.mean.double()
    folded = copy.deepcopy(sae)
    dtype = sae.W_enc.dtype
    W_enc, b_enc, b_dec = W @ sae.W_enc.double(), sae.b_enc.double(), mean + sae.b_dec.double() @ U
    if sae.input_norm == "standardize":
        # Standardized inputs sum to 0, so the all-ones direction carries only float rounding, which W scales by up
        # to (eps · mean λ)^(-1/2) (that direction has no variance). Drop it from W_enc: with P = I − 11ᵀ/d,
        # (x − b_dec) @ P W_enc + b_enc + mean(b_dec)·1ᵀ W_enc equals the unprojected form for every x ⟂ 1.
        ones_row = W_enc.mean(0, keepdim=True)  # 1ᵀ W_enc / d
        b_enc = b_enc - b_dec.sum() * ones_row[0]  # (b_dec 11ᵀ/d) W_enc = Σ b_dec · (1ᵀ W_enc / d)
        W_enc = W_enc - ones_row
    folded.W_enc.copy_(W_enc.to(dtype))
    folded.b_enc.copy_(b_enc.to(dtype))
    folded.W_dec.copy_((sae.W_dec.double() @ U).to(dtype))
    folded.b_dec.copy_(b_dec.to(dtype))
    return folded
