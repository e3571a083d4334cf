"""Per-feature attribution: the columns add up to the rewards, whatever the batching."""

import torch

from sarm.callbacks.attribution import FeatureAttributionSums


def _contributions(n_pairs=40, n_latents=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_latents, generator=g)
    z_c = torch.relu(torch.randn(n_pairs, n_latents, generator=g))
    z_r = torch.relu(torch.randn(n_pairs, n_latents, generator=g))
    return z_c * weight, z_r * weight


def test_feature_margin_contributions_sum_to_the_mean_margin():
    c, r = _contributions()
    sums = FeatureAttributionSums(12)
    sums.update(c, r)
    out = sums.compute()
    mean_margin = (c.sum(-1) - r.sum(-1)).double().mean()
    torch.testing.assert_close(out["mean_margin_contribution"].sum(), mean_margin)
    torch.testing.assert_close(out["mean_margin"], mean_margin)
    torch.testing.assert_close(out["margin_share"].sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(out["mean_chosen_contribution"].sum(), c.sum(-1).double().mean())


def test_accumulation_does_not_depend_on_batching():
    c, r = _contributions(seed=1)
    whole, chunked = FeatureAttributionSums(12), FeatureAttributionSums(12)
    whole.update(c, r)
    for a, b in zip(c.split(7), r.split(7)):
        chunked.update(a, b)
    for key, value in whole.compute().items():
        torch.testing.assert_close(chunked.compute()[key], value)


def test_frequency_and_sign_agreement_by_hand():
    # Two features, three pairs. Margins: +2, -1, +1.
    c = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    r = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    sums = FeatureAttributionSums(2)
    sums.update(c, r)
    out = sums.compute()
    torch.testing.assert_close(out["freq_chosen"], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(out["freq_rejected"], torch.tensor([0.0, 2 / 3], dtype=torch.float64))
    # feature 0 pushes with the margin in pairs 1 and 3; feature 1 in pair 2 (−1 with a −1 margin).
    torch.testing.assert_close(out["sign_agreement"], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert out["accuracy"].item() == 2 / 3
