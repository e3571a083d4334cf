"""SAE losses and the guard every training step runs, with no Lightning in them.

    normalized_mse(x, x̂)     Σ‖x − x̂‖² / Σ‖x − mean(x)‖²: the batch's FVU (SAE training, SARM's joint mode)
    auxk_loss                dead latents reconstruct the detached residual (Gao et al.)
    check_finite             stop at the first non-finite loss, naming where it came from

``sarm.sae.module`` (the SAE trainer) and ``sarm.reward`` (SARM's joint mode, every reward model's
guard) both use them; neither reaches into the other's Lightning module for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarm.errors import NumericalFault
from sarm.sae.base import SparseAutoencoder
from sarm.sae.kernels import sparse_decode


def check_finite(loss: torch.Tensor, what: str, step: int, inputs: torch.Tensor | None = None) -> None:
    """Stop at the first non-finite loss, saying where it came from (one device sync per step)."""
    if torch.isfinite(loss):
        return
    source = ""
    if inputs is not None and not torch.isfinite(inputs).all():
        source = f"; the batch itself holds {int((~torch.isfinite(inputs)).sum())} non-finite values"
    raise NumericalFault(
        f"{what} is {float(loss)} at step {step}{source}. Training stopped; checkpoints "
        "written so far are intact (resume with --ckpt_path)"
    )


def normalized_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the batch (the batch's FVU)."""
    return (x - x_hat).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)


def auxk_loss(
    sae: SparseAutoencoder, x: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor, k_aux: int
) -> torch.Tensor:
    """Reconstruct the detached residual from the dead latents' top pre-activations, without b_dec.

    ``x`` is the (preprocessed) input the SAE reconstructs; latents masked out of the forward pass
    (``sae.latent_mask``) take no part. The dead latents' pre-activations are computed on their own
    (batch × d × n_dead), so the sparse TopK path never needs the full [batch, n_latents] matrix.
    """
    dead_ids = (dead & sae.latent_mask).nonzero().squeeze(1)
    if dead_ids.numel() == 0:
        return residual.new_zeros(())
    pre = (x - sae.b_dec) @ sae.W_enc[:, dead_ids] + sae.b_enc[dead_ids]
    values, slots = pre.topk(min(k_aux, dead_ids.numel()), dim=-1, sorted=False)
    e_hat = sparse_decode(F.relu(values), dead_ids[slots], sae.W_dec)
    return normalized_mse(residual.detach(), e_hat)
