"""The converged Bradley–Terry fit (sarm.reward.fit): stationarity, closed forms, fixed-support refits."""

from __future__ import annotations

import math

import pytest
import torch

from sarm.reward.fit import bt_objective, fit_head, pair_accuracy
from sarm.reward.pooled import pooled_features


def gradient(weight: torch.Tensor, diff: torch.Tensor, l2: float) -> torch.Tensor:
    """∇L by autograd, independently of the fitter."""
    w = weight.double().clone().requires_grad_(True)
    bt_objective(w, diff.double(), l2).backward()
    return w.grad


def noisy_pairs(n_pairs: int = 400, n_features: int = 12, seed: int = 0) -> torch.Tensor:
    """Pair differences whose labels are flipped 20% of the time: not separable, a finite unpenalized optimum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_pairs, n_features, generator=g)
    truth = torch.randn(n_features, generator=g)
    flip = torch.where(torch.rand(n_pairs, generator=g) < 0.2, -1.0, 1.0)
    return x * (torch.sign(x @ truth) * flip)[:, None]  # oriented so that "chosen" is the labelled winner


def test_one_feature_matches_the_closed_form():
    # k pairs with d = +1, P − k with d = −1: L(w) = (k/P) softplus(−w) + (1 − k/P) softplus(w), minimized at
    # σ(w) = k/P, w = log(k / (P − k)).
    k, total = 7, 10
    diff = torch.tensor([[1.0]] * k + [[-1.0]] * (total - k))
    fit = fit_head(diff)
    assert fit.converged
    assert fit.weight[0].item() == pytest.approx(math.log(k / (total - k)), abs=1e-5)


def test_two_features_match_a_brute_force_grid():
    diff = noisy_pairs(60, 2, seed=3)
    fit = fit_head(diff, l2=0.05)
    grid = torch.linspace(-3, 3, 601, dtype=torch.float64)
    w1, w2 = torch.meshgrid(grid, grid, indexing="ij")
    weights = torch.stack([w1.flatten(), w2.flatten()], -1)
    # The objective at every grid point at once: [P, G] logits.
    losses = -torch.nn.functional.logsigmoid(diff.double() @ weights.T).mean(0) + 0.025 * weights.pow(2).sum(-1)
    best = weights[losses.argmin()]
    assert torch.allclose(fit.weight.double(), best, atol=0.011)  # grid step 0.01
    assert fit.loss <= float(losses.min()) + 1e-9


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_the_gradient_vanishes_at_the_solution_of_non_separable_data(l2):
    diff = noisy_pairs()
    fit = fit_head(diff, l2=l2, tol=1e-7)
    assert fit.converged and fit.grad_norm <= 1e-7
    assert gradient(fit.weight, diff, l2).abs().max() < 1e-5  # float32 weights, gradient recomputed in float64
    assert 0.6 < pair_accuracy(diff, fit.weight) < 0.95


def test_separable_data_needs_the_penalty_to_converge():
    diff = noisy_pairs().abs()  # every coordinate favours "chosen": separable
    unpenalized = fit_head(diff, tol=1e-9, max_iter=50)
    penalized = fit_head(diff, l2=1e-2, tol=1e-8)
    assert penalized.converged
    assert gradient(penalized.weight, diff, 1e-2).abs().max() < 1e-5
    # Without a penalty the weights run off toward infinity: larger than the penalized ones, and the loss lower.
    assert unpenalized.weight.norm() > 3 * penalized.weight.norm()
    assert unpenalized.loss < penalized.loss
    assert pair_accuracy(diff, penalized.weight) == 1.0


def test_a_refit_on_a_support_leaves_every_other_weight_exactly_zero():
    diff = noisy_pairs()
    support = torch.tensor([0, 3, 7])
    fit = fit_head(diff, l2=1e-3, support=support, init=torch.full((12,), 5.0))
    off = torch.ones(12, dtype=torch.bool)
    off[support] = False
    assert (fit.weight[off] == 0).all()
    assert (fit.weight[support] != 0).all()
    # It is the fit of the support's columns alone, and stationary there (not elsewhere: the others are held).
    alone = fit_head(diff[:, support], l2=1e-3)
    assert torch.allclose(fit.weight[support], alone.weight, atol=1e-5)
    grad = gradient(fit.weight, diff, 1e-3)
    assert grad[support].abs().max() < 1e-5 and grad[off].abs().max() > 1e-3
    # A bool mask names the same support.
    mask = ~off
    assert torch.allclose(fit_head(diff, l2=1e-3, support=mask).weight, fit.weight, atol=1e-5)


def test_an_empty_support_is_the_zero_head():
    fit = fit_head(noisy_pairs(), support=torch.tensor([], dtype=torch.long))
    assert (fit.weight == 0).all() and fit.loss == pytest.approx(math.log(2))


def test_a_bad_support_is_refused():
    with pytest.raises(ValueError, match="outside"):
        fit_head(noisy_pairs(), support=torch.tensor([12]))
    with pytest.raises(ValueError, match="repeat"):
        fit_head(noisy_pairs(), support=torch.tensor([1, 1]))


def test_pooled_features_are_the_networks_features_of_the_splits_pairs(tiny_cache):
    from sarm.cache import PairActivationDataModule
    from sarm.reward import DenseNetwork
    from sarm.sae.base import standardize

    data = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    network = DenseNetwork(data.hidden_size, "last")
    z_chosen, z_rejected, margin = pooled_features(network, data, "val")
    index = data.cache.pair_indices("val")
    last = data.cache.last_token_activations().float()
    assert z_chosen.shape == (len(index), data.hidden_size) and margin.shape == (len(index),)
    assert torch.allclose(z_chosen, standardize(last[2 * index]), atol=1e-5)
    assert torch.allclose(z_rejected, standardize(last[2 * index + 1]), atol=1e-5)
