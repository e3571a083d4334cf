"""The residualized SARM (``sarm.reward.residual``): feature share, the offset fit, the choice of μ, the network."""

from __future__ import annotations

import math

import pytest
import torch

from sarm.reward.fit import bt_objective, budget_head
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.reward.residual import (
    ResidualSARMNetwork,
    feature_share,
    fit_residual,
    select_residual_l2,
)
from sarm.sae.topk import TopKSAE


def test_feature_share_is_the_absolute_margin_fraction():
    a = torch.tensor([1.0, -2.0, 0.5])
    b = torch.tensor([-0.5, 0.0, 1.0])
    assert feature_share(a, b) == pytest.approx(3.5 / (3.5 + 1.5))


def test_feature_share_limits_and_invariances():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert feature_share(a, torch.zeros(50)) == 1.0  # v = 0: the features carry everything
    assert feature_share(torch.zeros(50), b) == 0.0  # w = 0: nothing
    assert feature_share(torch.zeros(50), torch.zeros(50)) == 1.0  # nothing left unexplained
    share = feature_share(a, b)
    assert 0.0 < share < 1.0
    order = torch.randperm(50, generator=g)
    assert feature_share(a[order], b[order]) == pytest.approx(share)  # pair order
    flip = torch.where(torch.rand(50, generator=g) < 0.5, -1.0, 1.0)
    assert feature_share(a * flip, b * flip) == pytest.approx(share)  # which response is called chosen
    assert feature_share(3 * a, 3 * b) == pytest.approx(share)  # a common rescaling of (w, v)


def planted(n_pairs: int = 800, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature differences (20, features 0..2 planted) and dense differences (16, dim 0 planted) of the same pairs:
    the label is decided by 2 z_0 − z_1 + z_2 + 0.8 h_0, so the features alone miss part of it."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_pairs, 20, generator=g)
    h = torch.randn(n_pairs, 16, generator=g)
    score = 2 * z[:, 0] - z[:, 1] + z[:, 2] + 0.8 * h[:, 0]
    sign = torch.sign(score)[:, None]
    return z * sign, h * sign


def test_the_residual_fit_is_stationary_on_the_full_objective_with_the_features_fixed():
    z, h = planted()
    mu = 1e-2
    fit = fit_residual(z, h, max_features=3, residual_l2=mu)
    assert sorted((fit.feature.weight != 0).nonzero().flatten().tolist()) == [0, 1, 2]
    assert fit.residual.converged
    # ∇_v of mean −log σ(a_p + v · d̃_p) + (μ/2)‖v‖², written out here, vanishes at the fitted v.
    a = (z.double() @ fit.feature.weight.double()).detach()
    v = fit.residual.weight.double().clone().requires_grad_(True)
    loss = -torch.nn.functional.logsigmoid(a + h.double() @ v).mean() + 0.5 * mu * v.pow(2).sum()
    loss.backward()
    assert v.grad.abs().max() < 1e-5
    # The residual picks up the planted hidden dimension the features miss.
    assert int(fit.residual.weight.abs().argmax()) == 0


def test_a_margin_is_carried_into_the_residual_fit():
    z, h = planted()
    margin = torch.linspace(0, 1, len(z))
    fit = fit_residual(z, h, max_features=3, residual_l2=1e-2, margin=margin)
    a = z.double() @ fit.feature.weight.double()
    # the offset form equals fit_head's objective with margin − a: its v is stationary there
    v = fit.residual.weight.double().clone().requires_grad_(True)
    bt_objective(v, h.double(), 1e-2, margin.double() - a).backward()
    assert v.grad.abs().max() < 1e-5


def test_the_penalty_trades_share_for_accuracy():
    z, h = planted()
    big = fit_residual(z, h, 3, residual_l2=1e3)
    small = fit_residual(z, h, 3, residual_l2=1e-4, feature=big.feature)
    assert big.share(z, h) > 0.99  # a heavy penalty leaves v ≈ 0
    assert small.share(z, h) < big.share(z, h)
    assert small.accuracy(z, h) > big.accuracy(z, h)  # the residual adds what the features miss
    a, b = small.margins(z, h)
    assert small.accuracy(z, h) == pytest.approx(float(((a + b) > 0).double().mean()))


def test_select_takes_the_largest_penalty_reaching_the_target_on_val_under_the_share_floor():
    z, h = planted(1200)
    zs = {"train": z[:800], "val": z[800:]}
    hs = {"train": h[:800], "val": h[800:]}
    grid = (1e2, 1e-1, 1e-3)
    chosen, sweep = select_residual_l2(zs, hs, 3, target_accuracy=0.0, grid=grid)
    rows = [row for _, row in sweep]
    assert chosen.residual_l2 == 1e2  # every μ reaches 0: the largest
    assert [r["residual_l2"] for r in rows] == [1e2, 1e-1, 1e-3]
    for fit, row in sweep:
        assert row["val_accuracy"] == fit.accuracy(zs["val"], hs["val"])
        assert row["val_share"] == fit.share(zs["val"], hs["val"])
    target = rows[1]["val_accuracy"]
    chosen, _ = select_residual_l2(zs, hs, 3, target_accuracy=target, grid=grid)
    assert chosen.residual_l2 == max(r["residual_l2"] for r in rows if r["val_accuracy"] >= target)
    chosen, _ = select_residual_l2(zs, hs, 3, target_accuracy=1.1, grid=grid)  # none reaches: best val
    assert chosen.accuracy(zs["val"], hs["val"]) == max(r["val_accuracy"] for r in rows)
    # The share floor excludes the μ below it, whatever their accuracy.
    floor = rows[1]["val_share"]
    chosen, _ = select_residual_l2(zs, hs, 3, target_accuracy=1.1, min_share=floor, grid=grid)
    allowed = [r for r in rows if r["val_share"] >= floor]
    assert chosen.share(zs["val"], hs["val"]) >= floor
    assert chosen.accuracy(zs["val"], hs["val"]) == max(r["val_accuracy"] for r in allowed)
    chosen, _ = select_residual_l2(zs, hs, 3, target_accuracy=0.0, min_share=1.1, grid=grid)  # none keeps it
    assert chosen.residual_l2 == 1e2
    assert all(math.isfinite(r["val_share"]) for r in rows)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_the_network_reward_is_its_feature_terms_plus_the_residual(pooling):
    torch.manual_seed(0)
    sarm = SARMNetwork(TopKSAE(8, 16, 4), pooling=pooling)
    hidden = torch.randn(6, 5, 8)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 3:] = False
    with torch.no_grad():
        z = sarm.features(hidden, mask)
        h = DenseNetwork(8, pooling).features(hidden, mask)
    diff, dense_diff = z[:3] - z[3:], h[:3] - h[3:]
    fit = fit_residual(diff, dense_diff, max_features=2, residual_l2=1.0, feature=budget_head(diff, 2, l2=1.0))
    network = ResidualSARMNetwork.from_fit(sarm, fit)
    with torch.no_grad():
        contributions, residual = network.decompose(hidden, mask)
        reward = network(hidden, mask)
    torch.testing.assert_close(contributions.sum(-1) + residual, reward)
    a, b = fit.margins(diff, dense_diff)  # the pair margins of the fit are the network's reward differences
    torch.testing.assert_close((reward[:3] - reward[3:]).double(), a + b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((residual[:3] - residual[3:]).double(), b, atol=1e-5, rtol=1e-5)
    assert network.config()["kind"] == "residual_sarm"
    with pytest.raises(ValueError, match="pooling"):
        ResidualSARMNetwork(sarm, DenseNetwork(8, "last" if pooling == "mean" else "mean"))
