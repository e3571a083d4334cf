"""Per-feature attribution: the columns add up to the rewards, whatever the batching; one ranking rule."""

import pytest
import torch

from sarm.attribution import (
    FeatureAttributionSums,
    largest_terms,
    margin_contributions,
    rank_features,
    steering_effect,
    zeroing_effect,
)
from sarm.attribution.callback import PairRecords
from sarm.reward.network import DenseNetwork


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
    for a, b in zip(c.split(7), r.split(7), strict=True):
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


def test_features_rank_by_the_magnitude_of_their_mean_margin_contribution():
    mean = torch.tensor([0.5, -2.0, 0.0, 2.0, -0.1], dtype=torch.float64)
    # |m|: 2, 2 (tie: index order), 0.5, 0.1, 0; the signed order would put feature 1 last but one.
    assert rank_features(mean).tolist() == [1, 3, 0, 4, 2]


def test_zeroing_from_per_pair_terms_equals_re_scoring_zeroed_features():
    g = torch.Generator().manual_seed(2)
    network = DenseNetwork(6)
    network.head.weight.data.copy_(torch.randn(6, generator=g))
    z_c, z_r = torch.relu(torch.randn(30, 6, generator=g)), torch.relu(torch.randn(30, 6, generator=g))
    terms = margin_contributions(network.head, z_c, z_r).detach()
    margin = terms.sum(-1)
    for features in ([0], [2, 5]):
        exact = steering_effect(network, z_c, z_r, features, "zero")
        from_terms = zeroing_effect(margin, terms[:, features], features)
        assert from_terms.keys() == exact.keys()
        for key, value in exact.items():
            assert from_terms[key] == pytest.approx(value, abs=1e-6), key


def test_largest_terms_are_each_pairs_waterfall():
    c = torch.tensor([[0.1, -3.0, 2.0, 0.0], [0.0, 0.0, 0.5, 0.0]])
    feature, value = largest_terms(c, 3)
    assert feature[0].tolist() == [1, 2, 0] and value[0].tolist() == pytest.approx([-3.0, 2.0, 0.1])
    assert feature[1, 0] == 2 and value[1].tolist() == [0.5, 0.0, 0.0]  # fewer non-zero terms: zeros last


def test_pair_records_keep_the_top_features_terms_of_every_pair_whatever_the_batching():
    c, r = _contributions(n_pairs=23, n_latents=12, seed=3)
    c[c.abs() < 0.5] = 0.0  # sparse, as SAE features are
    terms = c - r
    records = PairRecords(12, terms=4)
    for start in range(0, 23, 5):
        rows = slice(start, start + 5)
        ids = torch.arange(23)[rows] + 100
        records.add(
            {"pair": ids, "chosen_reward": c[rows].sum(-1), "rejected_reward": r[rows].sum(-1)}, ids % 2, terms[rows]
        )
    top = torch.tensor([7, 2, 11])
    out = records.tensors(top)
    records.close()
    assert out["pair"].tolist() == list(range(100, 123)) and out["subset"].tolist() == [i % 2 for i in range(100, 123)]
    torch.testing.assert_close(out["contributions"], terms[:, top])
    torch.testing.assert_close(out["chosen_reward"] - out["rejected_reward"], terms.sum(-1))
    feature, value = largest_terms(terms, 4)
    assert torch.equal(out["terms_feature"], feature)
    torch.testing.assert_close(out["terms_value"], value)
