"""The model–data contract: a reward model reads its data module through RewardData, and pooling is the model's."""

import json

import lightning as L
import pytest
import torch
from commands import fit_sarm

from sarm.cache import PairActivationDataModule, TokenActivationDataModule
from sarm.cli import main
from sarm.data.pairs import PairTextDataModule
from sarm.errors import SarmInputError
from sarm.reward import SARM
from sarm.reward.data import MEMBERS, reward_data
from sarm.sae import TopKSAE, save_sae


@pytest.fixture(scope="module")
def sae(tiny_cache, tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    return str(
        save_sae(
            TopKSAE(32, 64, 4),
            tmp_path_factory.mktemp("contract") / "sae",
            extra={"model_name": tiny_model_dir, "hook_layer": 2},
        )
    )


def fit_args(tiny_cache, sae, root, *extra, **overrides) -> list[str]:
    """One epoch of a SARM head at its default learning rate."""
    return fit_sarm(
        tiny_cache["cache"], sae, root, *extra, epochs=1, export=root / "export", model__lr=None, **overrides
    )


def test_a_config_whose_data_pools_otherwise_than_its_model_is_refused(tiny_cache, sae, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tiny_cache, sae, tmp_path, "--model.pooling", "mean", "--data.pooling", "last"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "sarm: error: model.pooling is 'mean' but data.pooling is 'last'" in err
    assert "leave data.pooling unset (or set it to 'mean')" in err and "Traceback" not in err
    assert not (tmp_path / "export").exists()  # refused before training


def test_the_data_module_takes_its_pooling_from_the_model(tiny_cache, sae, tmp_path):
    main(fit_args(tiny_cache, sae, tmp_path, "--model.pooling", "mean"))  # no data.pooling: the model's
    assert json.loads((tmp_path / "export" / "sarm.json").read_text())["pooling"] == "mean"
    data = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=4)
    L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    ).fit(SARM(sae=sae, pooling="mean"), data)
    assert data.pooling == "mean"
    assert next(iter(data.val_dataloader()))["hidden"].shape[1] > 1  # response tokens, not the last one alone


def test_a_data_module_that_is_not_a_reward_models_is_refused_naming_what_it_lacks(tiny_cache, sae, tmp_path, capsys):
    args = fit_args(tiny_cache, sae, tmp_path, data="sarm.cache.TokenActivationDataModule", data__batch_size=None)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert (
        "TokenActivationDataModule is not a reward model's data module: it lacks subsets, take_pooling, yields_tokens"
    ) in capsys.readouterr().err


def test_both_pair_data_modules_provide_reward_data_without_being_read(tmp_path):
    # Nothing is loaded to check: neither the cache nor the model config exists here.
    for data in (
        PairActivationDataModule(str(tmp_path / "no-cache")),
        PairTextDataModule(data=str(tmp_path / "none.jsonl"), model=str(tmp_path / "no-model")),
    ):
        assert reward_data(data) is data
    assert MEMBERS == ("backbone_settings", "hidden_size", "subsets", "take_pooling", "yields_tokens")
    with pytest.raises(SarmInputError, match="lacks subsets, take_pooling, yields_tokens"):
        reward_data(TokenActivationDataModule(str(tmp_path / "no-cache")))
    with pytest.raises(SarmInputError, match="none was given"):
        reward_data(None)


def test_a_declared_data_pooling_that_agrees_is_kept_and_one_that_does_not_is_refused(tmp_path):
    data = PairActivationDataModule(str(tmp_path), pooling="mean")
    data.take_pooling("mean")
    assert data.pooling == "mean"
    with pytest.raises(SarmInputError, match="model.pooling is 'last' but data.pooling is 'mean'"):
        data.take_pooling("last")
    free = PairActivationDataModule(str(tmp_path))
    assert free.pooling == "last"  # never told: the last token
    free.take_pooling("mean")
    free.take_pooling("last")  # an undeclared data module serves whichever model it is given
    assert free.pooling == "last"
