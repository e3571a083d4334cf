"""Legibility measurements (sarm.attribution.legibility): the per-pair share and the top-m curve."""

from __future__ import annotations

import pytest
import torch

from sarm.attribution.legibility import per_pair_share, top_m_accuracy, train_ranking


def test_the_share_is_the_top_m_absolute_mass_of_each_pair_averaged():
    c = torch.tensor(
        [
            [4.0, -3.0, 2.0, 1.0],  # Σ|c| = 10: top 1 = 4 → 0.4; top 2 = 7 → 0.7
            [0.0, 0.0, -5.0, 5.0],  # Σ|c| = 10: top 1 = 5 → 0.5; top 2 = 10 → 1.0
            [0.0, 0.0, 0.0, 0.0],  # no contribution at all: share 1 by definition
        ]
    )
    assert per_pair_share(c, 1) == pytest.approx((0.4 + 0.5 + 1.0) / 3)
    assert per_pair_share(c, 2) == pytest.approx((0.7 + 1.0 + 1.0) / 3)
    assert per_pair_share(c, 4) == pytest.approx(1.0)
    assert per_pair_share(c, 100) == pytest.approx(1.0)  # more than there are features


def test_the_share_reads_magnitudes_not_the_signed_margin():
    # Terms that cancel still count: the margin is 0 but a person has to read both terms.
    assert per_pair_share(torch.tensor([[3.0, -3.0, 1.0, 1.0]]), 2) == pytest.approx(0.75)


def test_top_m_accuracy_keeps_the_head_weights_on_the_train_ranking():
    # Feature 0 carries the train split's mean contribution; on test only feature 1 is informative.
    diff_train = torch.tensor([[2.0, 0.1], [2.0, -0.1], [1.0, 0.1]])
    diff_test = torch.tensor([[-1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]])
    weight = torch.tensor([1.0, 1.0])
    assert train_ranking(diff_train, weight).tolist() == [0, 1]
    acc = top_m_accuracy(diff_train, diff_test, weight, ms=[1, "all"])
    assert acc == {"1": pytest.approx(1 / 3), "all": pytest.approx(1 / 3)}  # (−1+1=0 is a tie: wrong)
    # Ranked on the test split instead, feature 1 would come first and win all three pairs: it is not.
    assert top_m_accuracy(diff_test, diff_test, weight, ms=[1])["1"] != acc["1"]


def test_the_ranking_never_sees_the_test_split():
    g = torch.Generator().manual_seed(0)
    diff_train = torch.randn(50, 8, generator=g)
    weight = torch.randn(8, generator=g)
    test_b = torch.randn(40, 8, generator=g)
    # The kept features are the train split's top m, whatever the test split holds.
    order = train_ranking(diff_train, weight)
    for m in (1, 3, 5):
        kept = torch.zeros(8)
        kept[order[:m]] = weight[order[:m]]
        expected = float(((test_b @ kept) > 0).float().mean())
        assert top_m_accuracy(diff_train, test_b, weight, ms=[m])[str(m)] == pytest.approx(expected)


def test_refit_fits_the_kept_features_alone_on_the_train_split():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g)
    truth = torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, -3.0])
    diff = x * torch.sign(x @ truth)[:, None]
    bad_head = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.05])  # right features, wrong proportions
    train, test = diff[:200], diff[200:]
    kept = top_m_accuracy(train, test, bad_head, ms=[2])["2"]
    refit = top_m_accuracy(train, test, bad_head, ms=[2], refit=True, l2=1e-3)["2"]
    assert refit > kept and refit > 0.97
