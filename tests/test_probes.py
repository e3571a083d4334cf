"""Planted recovery against the probe ceiling: the logistic fit, the F1 and ratio arithmetic, SAEBench's
selection, and the no-leak guarantees (splits by prompt; test labels never reach a fit)."""

import pytest
import torch

from sarm.attribution.probes import (
    SPARSE_K,
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


# ---------------------------------------------------------------- class balance (SAEBench's balanced probes)


def test_balanced_fit_gives_each_class_half_the_loss():
    torch.manual_seed(0)
    x = torch.randn(100, 3)
    y = torch.zeros(100, dtype=torch.bool)
    y[:20] = True
    x[y, 0] += 1.0
    fit = fit_logistic(x, y, l2=1e-2, balanced=True)
    assert fit.converged
    # ∂L/∂b = 0 with class weights: mean over negatives of σ = mean over positives of 1 − σ
    p = torch.sigmoid(fit.logits(x))
    assert float(p[~y].mean()) == pytest.approx(float((1 - p[y]).mean()), abs=1e-5)
    # ... which is the unweighted fit on the set balanced by repeating each positive 4 times (20·4 = 80 negatives)
    repeated = torch.cat([x[y].repeat(4, 1), x[~y]]), torch.cat([y[y].repeat(4), y[~y]])
    plain = fit_logistic(*repeated, l2=1e-2)
    assert torch.allclose(fit.weight, plain.weight, atol=1e-4) and fit.bias == pytest.approx(plain.bias, abs=1e-4)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x, torch.zeros(100, dtype=torch.bool), balanced=True)


def _rare(n: int = 2000, rate: float = 0.05):
    """A rare property and one latent that tells it apart only partly: on [0, 1] the latent is uniform for
    negatives and has density 2z for positives, a likelihood ratio 2z ≤ 2. At a 5 % prevalence the posterior
    odds stay ≤ 2 · 5/95 < 1: fitted to the raw class mix, no input is more likely positive than not. Balanced,
    the odds 2z pass 1 at z = ½, where three quarters of the positives (1 − ½²) and half the negatives lie."""
    latents, hidden, y = {}, {}, {}
    for split in SPLITS:
        label = torch.rand(n) < rate
        z = torch.rand(n, 8)
        z[label, 0] = torch.rand(int(label.sum())).sqrt()  # inverse CDF of the density 2z
        latents[split], hidden[split], y[split] = z, z[:, :1].clone(), label
    return latents, hidden, y


def test_a_rare_property_is_found_by_the_balanced_probe_and_lost_by_the_unbalanced_one():
    torch.manual_seed(0)
    latents, hidden, y = _rare()
    one = {split: latents[split][:, :1] for split in SPLITS}
    unbalanced, balanced = fit_probe(one, y, balanced=False), fit_probe(one, y)
    assert not unbalanced["predicted"].any() and unbalanced["f1"] == 0.0  # the prior wins everywhere
    recall = float(balanced["predicted"][y["test"]].float().mean())
    assert recall > 0.6 and balanced["f1"] > 0.1  # F1 at the natural 5 % mix, precision ~ 2·0.05·0.75
    # the rows of ``probe_property`` use the balanced fit for the ceiling and the sparse probes alike
    row = probe_property(latents, hidden, y)
    assert row["sparse1_latents"] == [0]
    assert row["sparse1_f1"] == pytest.approx(balanced["f1"])
    assert row["ceiling_f1"] == pytest.approx(fit_probe(hidden, y)["f1"]) and row["ceiling_f1"] > 0


def test_sparse_selection_reads_train_labels_only():
    torch.manual_seed(0)
    latents, hidden, y = _toy()
    scrambled = {
        "train": y["train"],
        "val": y["val"][torch.randperm(len(y["val"]))],
        "test": y["test"][torch.randperm(len(y["test"]))],
    }
    a, b = probe_property(latents, hidden, y), probe_property(latents, hidden, scrambled)
    for k in SPARSE_K:
        assert a[f"sparse{k}_latents"] == b[f"sparse{k}_latents"]
    assert a["single_latent"] == b["single_latent"]
