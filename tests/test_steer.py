"""Steering and ground-truth recovery on features whose meaning is known by construction."""

import pytest
import torch

from sarm.attribution import planted_recovery, steer, steering_effect
from sarm.reward.network import DenseNetwork


def test_steer_zeroes_scales_and_adds_only_the_chosen_features():
    z = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 6.0]])
    assert steer(z, [1], "zero").tolist() == [[1.0, 0.0, 3.0], [4.0, 0.0, 6.0]]
    assert steer(z, [0, 2], "scale", 0.5).tolist() == [[0.5, 2.0, 1.5], [2.0, 0.0, 3.0]]
    assert steer(z, [1], "add", 1.0).tolist() == [[1.0, 3.0, 3.0], [4.0, 1.0, 6.0]]
    assert z.tolist() == [[1.0, 2.0, 3.0], [4.0, 0.0, 6.0]]  # the input is not modified
    with pytest.raises(ValueError, match="operation"):
        steer(z, [0], "double")


def planted_setup(n_per_attribute: int = 10):
    """Two attributes; feature 0 fires on A's chosen responses, feature 1 on B's rejected ones,
    feature 2 on every response with a sign-off (a distractor), feature 3 is noise."""
    g = torch.Generator().manual_seed(0)
    rows, zc, zr = [], [], []
    for attribute in ("A", "B"):
        for i in range(n_per_attribute):
            signoff_c, signoff_r = bool(i % 2), bool(i % 3 == 0)
            rows.append({"meta": {"attribute": attribute, "chosen_signoff": signoff_c, "rejected_signoff": signoff_r}})
            c, r = torch.zeros(4), torch.zeros(4)
            if attribute == "A":
                c[0] = 1.0 + torch.rand(1, generator=g).item()
            else:
                r[1] = 1.0 + torch.rand(1, generator=g).item()
            c[2], r[2] = float(signoff_c), float(signoff_r)
            c[3], r[3] = torch.rand(2, generator=g).tolist()
            zc.append(c)
            zr.append(r)
    network = DenseNetwork(4)  # any network: only the head is used
    network.head.weight.data.copy_(torch.tensor([1.0, -1.0, 0.05, 0.01]))
    features = {"z_chosen": torch.stack(zc), "z_rejected": torch.stack(zr), "pair": torch.arange(len(rows))}
    return network, features, rows


def test_zeroing_the_deciding_feature_breaks_its_attribute_only():
    network, features, rows = planted_setup()
    a = torch.arange(len(rows)) < 10
    effect = steering_effect(network, features["z_chosen"][a], features["z_rejected"][a], [0], "zero")
    assert effect["accuracy_before"] == 1.0 and effect["accuracy"] < 0.6
    untouched = steering_effect(network, features["z_chosen"][~a], features["z_rejected"][~a], [0], "zero")
    assert untouched["accuracy"] == untouched["accuracy_before"] == 1.0


def test_recovery_names_each_attributes_feature_and_measures_the_distractor_share():
    network, features, rows = planted_setup()
    result = planted_recovery(network, features, rows, top=2)
    by_attribute = {row["attribute"]: row for row in result["attributes"]}
    assert by_attribute["A"]["features"][0] == 0 and by_attribute["B"]["features"][0] == 1
    assert by_attribute["A"]["f1"][0] == pytest.approx(1.0) and by_attribute["B"]["f1"][0] == pytest.approx(1.0)
    assert by_attribute["A"]["ceiling_f1"] == pytest.approx(1.0)
    assert all(
        row["ceiling_f1"] >= row["best_f1"] and row["ceiling_f1_within"] >= row["best_f1_within"]
        for row in result["attributes"]
    )
    assert by_attribute["A"]["accuracy_zeroed"] < by_attribute["A"]["accuracy_before"] == 1.0
    # Zeroing A's top feature removes its whole margin but for the small distractor and noise terms.
    assert by_attribute["A"]["margin_zeroed"] < 0.1 * by_attribute["A"]["margin_before"]
    assert by_attribute["A"]["accuracy_zeroed_top"] <= by_attribute["A"]["accuracy_zeroed"]
    assert result["distractors"] == ["signoff"] and result["distractor_features"] == [2]  # not the noise feature 3
    contributions = (
        (network.head.contributions(features["z_chosen"]) - network.head.contributions(features["z_rejected"]))
        .mean(0)
        .abs()
        .detach()
    )
    expected = float(contributions[result["distractor_features"]].sum() / contributions.sum())
    assert result["distractor_share"] == pytest.approx(expected) and 0 < expected < 0.05
