"""SARM's head and loss: exact per-feature decomposition, Bradley–Terry, frozen SAE."""

import math

import pytest
import torch

from sarm.reward import SARM, SparseRewardHead
from sarm.reward.export import load_sarm, save_sarm
from sarm.reward.loss import bradley_terry_loss
from sarm.sae import TopKSAE, save_sae


@pytest.fixture
def sae_dir(tmp_path):
    torch.manual_seed(0)
    return str(save_sae(TopKSAE(16, 64, 4), tmp_path / "sae"))


def test_head_starts_at_zero_so_the_first_loss_is_log_two(sae_dir):
    model = SARM(sae=sae_dir)
    h = torch.randn(6, 16)
    assert torch.equal(model(h), torch.zeros(6))
    batch = {"chosen": h, "rejected": torch.randn(6, 16), "margin": torch.zeros(6), "pair": torch.arange(6)}
    assert abs(model._step(batch, "val")["loss"].item() - math.log(2)) < 1e-6


def test_contributions_sum_to_the_reward():
    torch.manual_seed(1)
    head = SparseRewardHead(64)
    head.weight.data.normal_()
    z = torch.relu(torch.randn(10, 64))
    torch.testing.assert_close(head.contributions(z).sum(-1), head(z), rtol=1e-6, atol=1e-6)


def test_bradley_terry_matches_its_formula_and_margin_shifts_it():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    expected = -torch.log(torch.sigmoid(chosen - rejected)).mean()
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected)
    margin = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected, margin), bradley_terry_loss(chosen - 1, rejected))


def test_only_the_head_trains_and_the_sae_stays_frozen(sae_dir):
    model = SARM(sae=sae_dir)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight"]
    model.train()
    assert not model.sae.training
    optimizer = model.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 64


def test_one_gradient_step_raises_chosen_above_rejected(sae_dir):
    model = SARM(sae=sae_dir, lr=0.1)
    optimizer = model.configure_optimizers()
    torch.manual_seed(2)
    chosen, rejected = torch.randn(32, 16), torch.randn(32, 16)
    batch = {"chosen": chosen, "rejected": rejected, "margin": torch.zeros(32), "pair": torch.arange(32)}
    before = (model(chosen) - model(rejected)).mean()
    model._step(batch, "val")["loss"].backward()
    optimizer.step()
    assert (model(chosen) - model(rejected)).mean() > before


def test_swapping_chosen_and_rejected_turns_accuracy_a_into_one_minus_a(sae_dir):
    model = SARM(sae=sae_dir)
    torch.manual_seed(3)
    model.head.weight.data.normal_()
    chosen, rejected = torch.randn(50, 16), torch.randn(50, 16)
    accuracy = (model(chosen) > model(rejected)).float().mean()
    swapped = (model(rejected) > model(chosen)).float().mean()
    assert accuracy + swapped == pytest.approx(1.0)  # continuous rewards: no ties


def test_export_round_trip_restores_rewards(sae_dir, tmp_path):
    model = SARM(sae=sae_dir)
    model.head.weight.data.normal_()
    save_sarm(tmp_path / "sarm", model.sae, model.head, {"model": "m", "layer": 2}, {"val/accuracy": 1.0})
    sae, head, config = load_sarm(tmp_path / "sarm")
    h = torch.randn(5, 16)
    torch.testing.assert_close(head(sae.encode(h)), model(h))
    assert config["backbone"] == {"model": "m", "layer": 2}
    assert config["head_nonzero"] == 64
    reloaded = SARM(sae=str(tmp_path / "sarm"))  # an exported SARM continues training from its head
    torch.testing.assert_close(reloaded(h), model(h))
