"""Matryoshka BatchTopK and JumpReLU: their losses and gradients against direct computations, their export.

Matryoshka (Bussmann et al. 2025): the reconstruction loss is the sum of every prefix's FVU. JumpReLU
(Rajamanoharan et al. 2024): the threshold's gradient is the kernel pseudo-derivative of the paper's eqs. 11–12,
checked against the finite difference of the kernel-smoothed function it estimates.
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from sarm.sae import JumpReLUSAE, MatryoshkaBatchTopKSAE, SAEModule, load_sae, save_sae
from sarm.sae.jumprelu import JumpReLUFunction, StepFunction
from sarm.sae.losses import normalized_mse
from sarm.sae.matryoshka import prefix_widths

D_IN, N, K = 16, 64, 4


def test_default_prefixes_double_and_end_at_the_dictionary():
    assert prefix_widths(1024) == [128, 256, 512, 1024]
    assert prefix_widths(64, [8, 64]) == [8, 64]
    for bad in ([8, 32], [32, 8, 64], [0, 64]):
        with pytest.raises(ValueError):
            prefix_widths(64, bad)


def test_matryoshka_loss_is_the_sum_of_prefix_reconstruction_losses():
    torch.manual_seed(0)
    module = SAEModule(architecture="matryoshka_batchtopk", n_latents=N, k=K, d_in=D_IN, matryoshka_widths=[8, 24, N])
    x = torch.randn(128, D_IN)
    loss, logs, out = module.training_loss(x)
    sae, f = module.sae, out.latents
    direct = sum(normalized_mse(out.x, f[:, :m] @ sae.W_dec[:m] + sae.b_dec) for m in (8, 24, N))
    torch.testing.assert_close(logs["train/matryoshka"], direct)
    torch.testing.assert_close(out.x_hat, f @ sae.W_dec + sae.b_dec)  # the last prefix is the reconstruction
    auxk = logs.get("train/auxk", torch.zeros(()))
    torch.testing.assert_close(loss, direct + module.hparams.auxk_coefficient * auxk)
    # the inner levels train only their own prefixes' decoder rows
    inner = sum(normalized_mse(out.x, f[:, :m] @ sae.W_dec[:m] + sae.b_dec) for m in (8, 24))
    (grad_inner,) = torch.autograd.grad(inner, sae.W_dec)
    assert grad_inner[24:].abs().max() == 0 and grad_inner[:8].abs().max() > 0


def test_jumprelu_forward_keeps_pre_activations_above_each_threshold():
    pre = torch.tensor([[0.5, 0.2, -1.0, float("-inf")]])
    threshold = torch.tensor([0.4, 0.3, 0.0, 0.0])
    assert torch.equal(JumpReLUFunction.apply(pre, threshold, 0.1), torch.tensor([[0.5, 0.0, 0.0, 0.0]]))
    assert torch.equal(StepFunction.apply(pre, threshold, 0.1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def smoothed_step(z: torch.Tensor, theta: float, epsilon: float) -> torch.Tensor:
    """Σ over tokens of H(z − θ) smoothed by the rectangle kernel: ∫ H(z − θ + εu) K(u) du = clamp((z − θ)/ε + ½, 0, 1).
    Its θ-derivative is −(1/ε)·K((z − θ)/ε), the paper's estimator (eq. 12); JumpReLU's (eq. 11) is θ times it."""
    return ((z - theta) / epsilon + 0.5).clamp(0, 1).sum()


@pytest.mark.parametrize("jump", [True, False])
def test_threshold_gradient_is_the_papers_pseudo_derivative(jump):
    torch.manual_seed(0)
    epsilon = 0.2
    z = torch.randn(256, 8)
    theta = (0.3 + 0.5 * torch.rand(8)).requires_grad_()
    out = (JumpReLUFunction if jump else StepFunction).apply(z, theta, epsilon)
    (grad,) = torch.autograd.grad(out.sum(), theta)
    inside = ((z - theta.detach()).abs() < epsilon / 2).float()
    scale = theta.detach() if jump else torch.ones(8)
    torch.testing.assert_close(grad, -(scale / epsilon) * inside.sum(0))  # eqs. 11–12, summed over tokens
    # and that is the finite-difference derivative of the kernel-smoothed step, latent by latent (float64)
    h = 1e-4
    for i in range(8):
        column, t = z[:, i].double(), float(theta[i].detach())
        numeric = (smoothed_step(column, t + h, epsilon) - smoothed_step(column, t - h, epsilon)) / (2 * h)
        assert float(numeric) * float(scale[i]) == pytest.approx(float(grad[i]), rel=1e-4, abs=1e-6)


def test_jumprelu_gradient_in_z_is_exact_and_step_passes_none_to_z():
    z = torch.tensor([[0.5, 0.1]], requires_grad=True)
    theta = torch.tensor([0.2, 0.2])
    (grad,) = torch.autograd.grad(JumpReLUFunction.apply(z, theta, 0.1).sum(), z)
    assert torch.equal(grad, torch.tensor([[1.0, 0.0]]))
    out = StepFunction.apply(z, theta.clone().requires_grad_(), 0.1).sum()
    assert torch.autograd.grad(out, z, allow_unused=True)[0] is None


def test_l0_penalty_is_mean_l0_or_its_quadratic_distance_to_the_target():
    sae = JumpReLUSAE(D_IN, N, bandwidth=0.1)
    with torch.no_grad():
        sae.threshold.fill_(0.5)
    pre = torch.randn(32, N)
    l0 = (pre > 0.5).float().sum(-1)
    torch.testing.assert_close(sae.l0_penalty(pre), l0.mean())
    torch.testing.assert_close(sae.l0_penalty(pre, target=8), (2 / 8 * (l0 - 8) ** 2).mean())


class Batches(L.LightningDataModule):
    """A stand-in for the activation cache: the ActivationData members and a few fixed batches."""

    hidden_size = D_IN
    backbone_settings = {"model": "tiny", "layer": 1, "max_length": 16}

    def __init__(self, n: int = 2048):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        codes = torch.rand(n, 48, generator=generator) * (torch.rand(n, 48, generator=generator) < 0.1)
        self.x = codes @ torch.randn(48, D_IN, generator=generator)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.x, batch_size=256, shuffle=False)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.x[:512], batch_size=256)


def test_jumprelu_training_starts_at_the_target_l0_and_learns_thresholds(tmp_path):
    L.seed_everything(0)
    module = SAEModule(
        architecture="jumprelu", n_latents=N, k=K, sparsity_coefficient=0.1, warmup_steps=2, export_dir=str(tmp_path)
    )
    data = Batches()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, data)
    sae = module.sae
    assert (sae.threshold >= 0).all() and sae.threshold.std() > 0  # trained per latent, projected to θ ≥ 0
    assert abs(float(trainer.callback_metrics["val/l0"]) - K) < K / 2  # the quadratic loss holds L0 near k
    loaded = load_sae(tmp_path)
    assert type(loaded) is JumpReLUSAE and torch.equal(loaded.threshold, sae.threshold.detach())
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["sarm"]["bandwidth"] == 0.05


def test_matryoshka_exports_as_jumprelu_with_its_prefixes_and_loads_back(tmp_path):
    sae = MatryoshkaBatchTopKSAE(D_IN, N, K, widths=[16, 32, N])
    with torch.no_grad():
        sae.threshold.fill_(0.3)
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert cfg["metadata"]["training_architecture"] == "matryoshka_batchtopk"
    assert cfg["metadata"]["training_architecture_details"] == {"k": K, "matryoshka_widths": [16, 32, N]}
    loaded = load_sae(tmp_path)
    assert type(loaded) is MatryoshkaBatchTopKSAE and loaded.widths == [16, 32, N] and loaded.k == K
    x = torch.randn(8, D_IN)
    assert torch.equal(loaded.encode(x), sae.eval().encode(x))
