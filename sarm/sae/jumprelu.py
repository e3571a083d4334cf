"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead", arXiv 2407.14435): one threshold per latent.

    f_i = JumpReLU_θ(pre)_i = pre_i · H(pre_i − θ_i),   θ_i ≥ 0

SAELens computes ReLU(pre) · 1[pre > θ]; for θ ≥ 0 that is the same value (the loaders clamp a
negative θ to 0, where ReLU would cut anyway). sarm reads such SAEs (Gemma Scope, SAELens's final
BatchTopK files without a recorded k) and trains them.

Training. H has zero derivative almost everywhere, so θ would never learn; the paper replaces the
derivatives with respect to θ by kernel density estimates (its eqs. 11–12), with the rectangle kernel
K(u) = 1[−½ < u < ½] and a bandwidth ε:

    ∂/∂θ JumpReLU_θ(z) := −(θ/ε) · K((z − θ)/ε)        ∂/∂z JumpReLU_θ(z) = H(z − θ)      (exact)
    ∂/∂θ H(z − θ)      := −(1/ε) · K((z − θ)/ε)        ∂/∂z H(z − θ) := 0                (no STE to the input)

The sparsity loss is the L0 norm ‖f‖₀ = Σ_i H(pre_i − θ_i) through the second estimator: ``l0_penalty``
gives the paper's λ · mean ‖f‖₀, or, with a target L0 t, GemmaScope 2's quadratic form
λ · mean (2/t)(‖f‖₀ − t)² (SAELens's ``jumprelu_sparsity_loss_mode = "quadratic"``), which holds L0 near t
and so lets JumpReLU be compared with TopK at a matched L0.

θ is a parameter in its own units (not log θ, as in the paper's pseudo-code; SAELens does the same, its issue
#494): Adam moves a parameter by about lr per step, so a log parameterization barely moves a small θ in a short
run. θ ≥ 0 is kept by projection after every optimizer step (``project``).
"""

from __future__ import annotations

import torch

from sarm.sae.base import SparseAutoencoder


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1[−½ < u < ½]."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """z · H(z − θ) with the exact gradient in z and the kernel pseudo-derivative −(θ/ε)·K((z − θ)/ε) in θ."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return torch.where(z > threshold, z, torch.zeros_like(z))  # a masked −inf stays 0, not NaN

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, threshold = ctx.saved_tensors
        epsilon = ctx.bandwidth
        grad_z = torch.where(z > threshold, grad, torch.zeros_like(grad))
        kernel = rectangle((z - threshold) / epsilon)
        grad_threshold = (-(threshold / epsilon) * kernel * grad).reshape(-1, z.shape[-1]).sum(0)
        return grad_z, grad_threshold, None


class StepFunction(torch.autograd.Function):
    """H(z − θ) with no gradient in z and the pseudo-derivative −(1/ε)·K((z − θ)/ε) in θ."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, threshold = ctx.saved_tensors
        epsilon = ctx.bandwidth
        grad_threshold = (-(1.0 / epsilon) * rectangle((z - threshold) / epsilon) * grad).reshape(-1, z.shape[-1])
        return None, grad_threshold.sum(0), None


class JumpReLUSAE(SparseAutoencoder):
    """``threshold`` ``[n_latents]``: a latent fires when its pre-activation exceeds its own threshold.

    Args:
        d_in, n_latents, input_norm: as for every SAE.
        bandwidth: ε of the threshold's pseudo-derivative (SAELens's default 0.05, for inputs of norm ≈ √d_in,
            which per-token standardization gives).
        initial_threshold: θ for every latent before training (SAELens's default 0.01).
    """

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        input_norm: str = "none",
        bandwidth: float = 0.05,
        initial_threshold: float = 0.0,
    ):
        super().__init__(d_in, n_latents, input_norm)
        if bandwidth <= 0:
            raise ValueError(f"bandwidth = {bandwidth} must be > 0")
        self.bandwidth = bandwidth
        self.threshold = torch.nn.Parameter(torch.full((n_latents,), float(initial_threshold)))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.bandwidth)

    def l0_penalty(self, pre: torch.Tensor, target: float | None = None) -> torch.Tensor:
        """mean over tokens of ‖f‖₀ (``target`` None, the paper's), or of (2/t)(‖f‖₀ − t)² (t = ``target``);
        differentiable in θ only, by the pseudo-derivative of H."""
        l0 = StepFunction.apply(pre, self.threshold, self.bandwidth).sum(-1)
        return l0.mean() if target is None else (2.0 / target * (l0 - target).pow(2)).mean()

    @torch.no_grad()
    def project(self) -> None:
        """Keep θ ≥ 0 after an optimizer step (a negative θ would let ReLU's zero region through)."""
        self.threshold.clamp_(min=0.0)

    def config(self) -> dict:
        return {**super().config(), "bandwidth": self.bandwidth}
