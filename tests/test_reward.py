"""Reward models: exact per-feature decomposition, Bradley–Terry, train modes, export."""

import math

import pytest
import torch

from sarm.reward import SARM, DenseRM, RewardHead
from sarm.reward.export import load_network, save_reward_model
from sarm.reward.loss import bradley_terry_loss
from sarm.sae import TopKSAE, save_sae
from sarm.sae.base import standardize


@pytest.fixture
def sae_dir(tmp_path):
    torch.manual_seed(0)
    return str(save_sae(TopKSAE(16, 64, 4), tmp_path / "sae", extra={"model_name": "m", "hook_layer": 2}))


def pair_batch(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> dict:
    """A cached-activation batch: last tokens of both sides stacked, T = 1."""
    hidden = torch.cat([chosen, rejected]).unsqueeze(1)
    n = chosen.shape[0]
    return {
        "hidden": hidden,
        "mask": torch.ones(2 * n, 1, dtype=torch.long),
        "margin": torch.zeros(n) if margin is None else margin,
        "pair": torch.arange(n),
        "subset": torch.full((n,), -1),
    }


def test_head_starts_at_zero_so_the_first_loss_is_log_two(sae_dir):
    model = SARM(sae=sae_dir)
    h = torch.randn(6, 16)
    assert torch.equal(model(h), torch.zeros(6))
    assert abs(model._step(pair_batch(h, torch.randn(6, 16)), "val")["loss"].item() - math.log(2)) < 1e-6


def test_contributions_sum_to_the_reward():
    torch.manual_seed(1)
    head = RewardHead(64)
    head.weight.data.normal_()
    z = torch.relu(torch.randn(10, 64))
    torch.testing.assert_close(head.contributions(z).sum(-1), head(z), rtol=1e-6, atol=1e-6)


def test_bradley_terry_matches_its_formula_and_margin_shifts_it():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    expected = -torch.log(torch.sigmoid(chosen - rejected)).mean()
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected)
    margin = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected, margin), bradley_terry_loss(chosen - 1, rejected))


def test_reward_centering_adds_the_mean_squared_pair_sum(sae_dir):
    torch.manual_seed(2)
    plain, centered = SARM(sae=sae_dir), SARM(sae=sae_dir, reward_centering=0.5)
    for model in (plain, centered):
        model.head.weight.data.copy_(torch.linspace(-1, 1, 64))
    batch = pair_batch(torch.randn(8, 16), torch.randn(8, 16))
    scored = plain.score(batch)
    expected = 0.5 * (scored["chosen_reward"] + scored["rejected_reward"]).pow(2).mean()
    difference = centered._step(batch, "train")["loss"] - plain._step(batch, "train")["loss"]
    torch.testing.assert_close(difference, expected)


def test_head_mode_trains_only_the_head_and_the_sae_stays_frozen(sae_dir):
    model = SARM(sae=sae_dir)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["network.head.weight"]
    model.train()
    assert not model.sae.training
    optimizer = model.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 64


def test_joint_mode_updates_the_sae_with_its_reconstruction_loss_and_keeps_decoder_rows_unit(sae_dir):
    model = SARM(sae=sae_dir, mode="joint", reconstruction_coefficient=1.0, sae_lr=0.01)
    before = model.sae.W_enc.detach().clone()
    optimizer = model.configure_optimizers()
    assert {id(p) for p in model.sae.parameters()} <= {id(p) for g in optimizer.param_groups for p in g["params"]}
    torch.manual_seed(4)
    scored = model._step(pair_batch(torch.randn(16, 16), torch.randn(16, 16)), "train")
    _, logs = model.extra_loss(scored)
    assert logs["train/sae_fvu"] > 0  # the reconstruction term is really there
    scored["loss"].backward()
    model.on_before_optimizer_step(optimizer)
    model.optimizer_step(0, 0, optimizer)  # the step, then unit decoder rows
    assert not torch.equal(model.sae.W_enc, before)
    torch.testing.assert_close(model.sae.W_dec.norm(dim=1), torch.ones(64))


def test_one_gradient_step_raises_chosen_above_rejected(sae_dir):
    model = SARM(sae=sae_dir, lr=0.1)
    optimizer = model.configure_optimizers()
    torch.manual_seed(2)
    chosen, rejected = torch.randn(32, 16), torch.randn(32, 16)
    before = (model(chosen) - model(rejected)).mean()
    model._step(pair_batch(chosen, rejected), "val")["loss"].backward()
    optimizer.step()
    assert (model(chosen) - model(rejected)).mean() > before


def test_pre_activation_features_give_a_dense_exact_sum(sae_dir):
    model = SARM(sae=sae_dir, features="pre")
    model.head.weight.data.normal_()
    h = torch.randn(5, 16)
    z = model.network.features(h)
    assert (z != 0).all()  # every latent contributes, unlike TopK latents
    torch.testing.assert_close(
        model(h), (model.sae.pre_activations(model.sae.preprocess(h)) * model.head.weight).sum(-1)
    )


def test_dense_baseline_reads_the_standardized_hidden_state():
    model = DenseRM(d_in=16)
    model.head.weight.data.normal_()
    h = torch.randn(7, 16) * 3 + 1
    torch.testing.assert_close(model(h), standardize(h) @ model.head.weight)


@pytest.mark.parametrize("kind", ["sarm", "dense"])
def test_export_round_trip_restores_rewards(sae_dir, tmp_path, kind):
    model = SARM(sae=sae_dir, pooling="mean") if kind == "sarm" else DenseRM(d_in=16, pooling="mean")
    model.head.weight.data.normal_()
    save_reward_model(
        tmp_path / "rm",
        model.network,
        {"model": "m", "layer": 2, "max_length": 64},
        metrics={"val/accuracy": 1.0},
        reward_norm=[0.5, 2.0],
    )
    network, config = load_network(tmp_path / "rm")
    h, mask = torch.randn(3, 5, 16), torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    torch.testing.assert_close(network(h, mask), model(h, mask))
    assert config["kind"] == kind and config["pooling"] == "mean"
    assert config["backbone"] == {"model": "m", "layer": 2, "max_length": 64, "weights": "reference"}
    assert config["reward_norm"] == {"mean": 0.5, "std": 2.0}
    # An export restarts through init_from, for both kinds, with its pooling.
    reloaded = SARM(init_from=str(tmp_path / "rm")) if kind == "sarm" else DenseRM(init_from=str(tmp_path / "rm"))
    assert reloaded.pooling == "mean"
    torch.testing.assert_close(reloaded(h, mask), model(h, mask))


def test_data_from_another_model_than_the_saes_is_refused_naming_both(sae_dir, tmp_path):
    from sarm.errors import SarmInputError

    model = SARM(sae=sae_dir)  # trained on layer 2 of 'm'
    model.check_backbone({"model": "m", "layer": 2})
    with pytest.raises(SarmInputError, match="the SAE was trained on 'm', the data comes from 'other/model'"):
        model.check_backbone({"model": "other/model", "layer": 2})  # same width, same layer: still refused
    local = tmp_path / "local-model"
    local.mkdir()
    on_local = SARM(
        sae=str(save_sae(TopKSAE(16, 64, 4), tmp_path / "sae2", extra={"model_name": str(local), "hook_layer": 2}))
    )
    on_local.check_backbone({"model": str(tmp_path / "." / "local-model"), "layer": 2})  # one directory, two spellings


def test_init_from_starts_a_model_from_an_exported_head_of_the_same_kind(sae_dir, tmp_path):
    trained = DenseRM(d_in=16)
    trained.head.weight.data.normal_()
    save_reward_model(tmp_path / "dense", trained.network, {"model": "m", "layer": 2})
    started = DenseRM(d_in=16, init_from=str(tmp_path / "dense"), mode="head")
    torch.testing.assert_close(started.head.weight, trained.head.weight)
    from sarm.errors import SarmInputError

    with pytest.raises(SarmInputError, match="cannot start"):
        SARM(sae=sae_dir, init_from=str(tmp_path / "dense"))


def export_sarm(sae_dir, directory, **kwargs) -> str:
    model = SARM(sae=sae_dir, **kwargs)
    model.head.weight.data.normal_(generator=torch.Generator().manual_seed(5))
    save_reward_model(directory, model.network, {"model": "m", "layer": 2, "max_length": 64})
    return str(directory)


def test_an_exported_sarm_given_as_sae_is_refused_pointing_at_init_from(sae_dir, tmp_path):
    from sarm.errors import SarmInputError

    export = export_sarm(sae_dir, tmp_path / "rm")
    with pytest.raises(SarmInputError, match=f"sae = {export}: an exported reward model .* with init_from = {export}"):
        SARM(sae=export)
    with pytest.raises(SarmInputError, match="starts from an SAE .* or restarts from an exported SARM"):
        SARM()


def test_init_from_restores_pooling_and_features_and_refuses_contradicting_them(sae_dir, tmp_path):
    from sarm.errors import SarmInputError

    export = export_sarm(sae_dir, tmp_path / "rm", pooling="mean", features="pre")
    restored = SARM(init_from=export)
    assert (restored.pooling, restored.network.feature_source) == ("mean", "pre")
    assert restored.trained_on["layer"] == 2 and restored.trained_on["model"] == "m"
    h, mask = torch.randn(2, 4, 16), torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    torch.testing.assert_close(restored(h, mask), load_network(export)[0](h, mask))
    assert SARM(init_from=export, pooling="mean", sae=sae_dir).pooling == "mean"  # agreeing values are fine
    with pytest.raises(SarmInputError, match=r"pooling = 'last', but init_from = .* was trained with pooling 'mean'"):
        SARM(init_from=export, pooling="last")
    with pytest.raises(SarmInputError, match=r"features = 'latents', but init_from = .* with features 'pre'"):
        SARM(init_from=export, features="latents")
    other = save_sae(TopKSAE(16, 32, 4), tmp_path / "small")
    with pytest.raises(SarmInputError, match="is not the SAE of init_from"):
        SARM(init_from=export, sae=str(other))


def test_a_restarted_model_refuses_data_from_another_backbone_than_its_export(sae_dir, tmp_path):
    from sarm.errors import SarmInputError

    trained = DenseRM(d_in=16)
    save_reward_model(tmp_path / "dense", trained.network, {"model": "m", "layer": 2})
    restarted = DenseRM(init_from=str(tmp_path / "dense"))
    restarted.check_backbone({"model": "m", "layer": 2})
    with pytest.raises(
        SarmInputError, match="the reward model .*dense was trained on layer 2 of m, the data comes from layer 3"
    ):
        restarted.check_backbone({"model": "m", "layer": 3})
    with pytest.raises(SarmInputError, match="d_in = 8, but init_from = .* reads hidden states of width 16"):
        DenseRM(init_from=str(tmp_path / "dense"), d_in=8)


def test_reward_modules_never_import_the_sae_trainer():
    """SARM reads SAEs and their losses (sarm.sae.losses), never the SAE's Lightning module."""
    import ast
    from pathlib import Path

    import sarm.reward

    offenders = []
    for path in sorted(Path(sarm.reward.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path.name}: {name}" for name in names if name.startswith("sarm.sae.module")]
    assert offenders == []
