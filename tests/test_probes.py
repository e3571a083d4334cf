"""Planted recovery against the probe ceiling: the logistic fit, the F1 and ratio arithmetic, SAEBench's
selection, and the no-leak guarantees (splits by prompt; test labels never reach a fit)."""

import pytest
import torch

from sarm.attribution.probes import (
    SPLITS,
    f1_score,
    fit_probe,
    probe_property,
    probe_splits,
    top_mean_difference,
    verdict,
)
from sarm.reward.fit import fit_logistic


def test_fit_logistic_is_converged_and_its_intercept_matches_the_base_rate():
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, 0] + 0.5 * torch.randn(400)) > 0.8  # imbalanced, not separable
    fit = fit_logistic(x, y, l2=1e-2)
    assert fit.converged
    # ∂L/∂b = mean(σ − y) = 0 (b unpenalized); ∂L/∂w = mean((σ − y) x) + λ w = 0
    p = torch.sigmoid(fit.logits(x))
    assert float(p.mean()) == pytest.approx(float(y.double().mean()), abs=1e-5)
    grad_w = ((p - y.double())[:, None] * x.double()).mean(0) + 1e-2 * fit.weight.double()
    assert float(grad_w.abs().max()) < 1e-5
    assert int(fit.weight.abs().argmax()) == 0


def test_f1_score_is_the_coverage_rule():
    label = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    predicted = torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool)
    assert f1_score(predicted, label) == pytest.approx(2 * 2 / (3 + 3))
    assert f1_score(torch.zeros(6, dtype=torch.bool), label) == 0.0


def test_top_mean_difference_picks_the_largest_absolute_class_mean_gap():
    y = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    z = torch.tensor([[1.0, 0.0, 5.0, 2.0], [1.0, 0.0, 5.0, 2.0], [0.0, 3.0, 5.0, 2.5], [0.0, 3.0, 5.0, 2.5]])
    # gaps: +1, −3, 0, −0.5
    assert top_mean_difference(z, y, 1).tolist() == [1]
    assert top_mean_difference(z, y, 2).tolist() == [1, 0]


def test_verdict_and_ratios():
    assert verdict(0.7, 1.0) == "not represented"
    assert verdict(0.8, 0.9) == "pass"
    assert verdict(0.95, 0.89) == "fail"
    torch.manual_seed(0)
    data = _toy()
    row = probe_property(*data)
    assert row["single_ratio"] == pytest.approx(row["single_f1"] / row["ceiling_f1"])
    assert row["sparse5_ratio"] == pytest.approx(row["sparse5_f1"] / row["ceiling_f1"])
    assert row["single_latent"] == 3  # the planted detector, chosen on train
    assert row["sparse1_latents"] == [3]
    assert row["ceiling_f1"] > 0.8 and row["verdict"] == "pass"


def _toy(n: int = 300):
    """Latent 3 fires exactly on the property; the hidden state carries it on coordinate 0."""
    latents, hidden, y = {}, {}, {}
    for split in SPLITS:
        label = torch.rand(n) < 0.3
        z = torch.relu(torch.randn(n, 8)) * 0.3
        z[:, 3] = label.float() * (1 + torch.rand(n))
        h = torch.randn(n, 5)
        h[:, 0] += 3 * label.float()
        latents[split], hidden[split], y[split] = z, h, label
    return latents, hidden, y


def test_the_fit_never_sees_test_labels():
    torch.manual_seed(0)
    latents, hidden, y = _toy()
    scrambled = {**y, "test": y["test"][torch.randperm(len(y["test"]))]}
    a, b = fit_probe(hidden, y), fit_probe(hidden, scrambled)
    assert a["l2"] == b["l2"] and a["f1_val"] == b["f1_val"]
    assert torch.equal(a["fit"].weight, b["fit"].weight) and a["fit"].bias == b["fit"].bias
    row_a, row_b = probe_property(latents, hidden, y), probe_property(latents, hidden, scrambled)
    for key in ("ceiling_l2", "single_latent", "sparse1_latents", "sparse5_latents"):
        assert row_a[key] == row_b[key]
    assert row_b["ceiling_f1"] < row_a["ceiling_f1"]  # the test labels are read, by the score only


def _rows(assignment):
    return [{"split": split, "prompt_id": prompt} for prompt, split in assignment]


def test_probe_splits_are_by_prompt_and_disjoint():
    rows = _rows([("p1", "train"), ("p2", "val"), ("p1", "train"), ("p3", "test"), ("p3", "test"), ("p4", "train")])
    index = probe_splits(rows)
    assert {s: v.tolist() for s, v in index.items()} == {"train": [0, 2, 5], "val": [1], "test": [3, 4]}
    prompts = {s: {rows[i]["prompt_id"] for i in v.tolist()} for s, v in index.items()}
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1 :]:
            assert not prompts[s] & prompts[t]
    with pytest.raises(ValueError, match="p1"):
        probe_splits(_rows([("p1", "train"), ("p1", "test")]))
