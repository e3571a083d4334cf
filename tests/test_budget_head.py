"""The few-feature head: ``sarm.reward.fit.budget_head`` and ``SARM(max_features=...)``."""

from __future__ import annotations

import pytest
import torch

from sarm.reward.fit import bt_objective, budget_head, fit_head, pair_accuracy


def planted(n_pairs: int = 600, n_features: int = 40, seed: int = 0) -> torch.Tensor:
    """Pair differences decided by features 0..3 (with 10% label noise); the other 36 are noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_pairs, n_features, generator=g)
    truth = torch.zeros(n_features)
    truth[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5])
    flip = torch.where(torch.rand(n_pairs, generator=g) < 0.1, -1.0, 1.0)
    return x * (torch.sign(x @ truth) * flip)[:, None]


def test_the_budget_head_has_at_most_m_weights_refit_to_stationarity_on_them():
    diff = planted()
    fit = budget_head(diff[:400], 4)
    support = (fit.weight != 0).nonzero().flatten()
    assert support.tolist() == [0, 1, 2, 3]  # elimination finds the planted features among 40
    assert fit.converged
    w = fit.weight.double().clone().requires_grad_(True)
    bt_objective(w, diff[:400].double()).backward()  # the last refit is unpenalized: ∇ = 0 on the support
    assert w.grad[support].abs().max() < 1e-5
    # On held-out pairs it keeps the accuracy of the converged fit on all 40 features.
    full = fit_head(diff[:400], l2=1e-3).weight
    assert pair_accuracy(diff[400:], fit.weight) >= pair_accuracy(diff[400:], full) - 0.01


@pytest.mark.parametrize("m", [1, 7, 40, 100])
def test_the_budget_is_never_exceeded(m):
    fit = budget_head(planted(seed=1), m)
    assert int((fit.weight != 0).sum()) <= m


def test_a_budget_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        budget_head(planted(), 0)


def test_a_sarm_with_max_features_exports_the_budget_head_of_its_train_split(tiny_cache, tmp_path):
    import json

    import lightning as L

    from sarm.cache import PairActivationDataModule
    from sarm.errors import SarmInputError
    from sarm.reward import SARM
    from sarm.reward.export import load_network
    from sarm.reward.pooled import pooled_features
    from sarm.sae import TopKSAE, save_sae

    data = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=8)
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(data.hidden_size, 32, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    with pytest.raises(SarmInputError, match="max_features"):
        SARM(sae=sae, max_features=0)
    model = SARM(sae=sae, lr=0.05, max_features=3, export_dir=str(tmp_path / "rm"))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, data)
    network, config = load_network(tmp_path / "rm")
    assert 0 < network.head.nonzero() <= 3 and config["head_nonzero"] == network.head.nonzero()
    chosen, rejected, margin = pooled_features(network, PairActivationDataModule(str(tiny_cache["cache"])), "train")
    expected = budget_head(chosen - rejected, 3, margin=margin).weight
    assert torch.allclose(network.head.weight, expected, atol=1e-5)
    chosen, rejected, _ = pooled_features(network, PairActivationDataModule(str(tiny_cache["cache"])), "val")
    rewards = torch.cat([chosen, rejected]) @ expected
    exported = json.loads((tmp_path / "rm" / "sarm.json").read_text())
    assert exported["reward_norm"]["mean"] == pytest.approx(float(rewards.mean()), abs=1e-5)
    # Its val metrics are the refit head's: none of the replaced head's (val/loss, val/margin) is left.
    assert set(exported["metrics"]) == {"val/accuracy", "val/reward_mean", "val/reward_std"}
    accuracy = float(((chosen - rejected) @ expected > 0).float().mean())
    assert exported["metrics"]["val/accuracy"] == pytest.approx(accuracy)


def test_best_on_val_keeps_the_best_val_accuracy_and_the_larger_penalty_on_a_tie():
    from sarm.reward.fit import Fit, best_on_val

    val = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # feature 0 wins two val pairs, feature 1 one

    def fit(weight):
        return Fit(torch.tensor(weight), 0.0, 0.0, True, 0)

    first, second, both = fit([1.0, 0.0]), fit([0.0, 1.0]), fit([1.0, 1.0])
    assert best_on_val([(1e-3, second), (1e-4, first)], val)[0] == 1e-4  # 2/3 beats 1/3
    assert best_on_val([(1e-5, both), (1e-2, both)], val)[0] == 1e-2  # equal: the larger λ


def test_a_sarm_with_budget_l2_unset_chooses_the_elimination_penalty_on_val(tiny_cache, tmp_path):
    import lightning as L

    from sarm.cache import PairActivationDataModule
    from sarm.reward import SARM
    from sarm.reward.export import load_network
    from sarm.reward.fit import best_budget_head
    from sarm.reward.pooled import pooled_features
    from sarm.sae import TopKSAE, save_sae

    data = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=8)
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(data.hidden_size, 32, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    model = SARM(sae=sae, lr=0.05, max_features=3, budget_l2=None, export_dir=str(tmp_path / "rm"))
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(model, data)
    network, _ = load_network(tmp_path / "rm")
    diff = {}
    for split in ("train", "val"):
        chosen, rejected, _ = pooled_features(network, PairActivationDataModule(str(tiny_cache["cache"])), split)
        diff[split] = chosen - rejected
    _, expected = best_budget_head(diff, 3)
    assert torch.allclose(network.head.weight, expected.weight, atol=1e-5)
