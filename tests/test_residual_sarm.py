"""``ResidualSARM`` through the CLI: `sarm fit` exports the residualized fit, `sarm test` logs its accuracy and feature
share, `sarm attribute` and `sarm report` give the residual its own term, and every number equals the exported network
applied to the same pairs directly."""

from __future__ import annotations

import json

import pytest
import torch
from commands import PAIRS, QUIET_CPU, attribute, flags

from sarm.cache import PairActivationDataModule
from sarm.cli import main
from sarm.reward.export import load_network
from sarm.reward.network import DenseNetwork
from sarm.reward.pooled import pooled_features
from sarm.reward.residual import ResidualSARMNetwork, feature_share
from sarm.sae import TopKSAE, save_sae

RESIDUAL_SARM = "sarm.reward.ResidualSARM"


@pytest.fixture(scope="module")
def fitted(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("residual-sarm")
    manifest = json.loads((tiny_cache["cache"] / "manifest.json").read_text())
    torch.manual_seed(0)
    sae = save_sae(TopKSAE(32, 64, 4), root / "sae", extra={"model_name": manifest["model"], "hook_layer": 2})
    options = {
        "model": RESIDUAL_SARM,
        "model.sae": sae,
        "model.pooling": "mean",
        "model.max_features": 3,
        "model.residual_l2": 0.0,  # unpenalized: a residual large enough that a term mislaid would show
        "model.export_dir": root / "export",
        "data": PAIRS,
        "data.cache_dir": tiny_cache["cache"],
        "data.batch_size": 8,
        "trainer.max_epochs": 1,
        "trainer.default_root_dir": root,
        **QUIET_CPU,
    }
    main(["fit", *flags(options)])
    network, config = load_network(root / "export")
    return {"root": root, "network": network, "config": config, "manifest": manifest, **tiny_cache}


def margins(network: ResidualSARMNetwork, cache, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b): each pair's feature and residual margin, from the pooled features of both parts."""
    data = PairActivationDataModule(str(cache))
    chosen, rejected, _ = pooled_features(network.sarm, data, split)
    dense = DenseNetwork(network.input_size(), network.pooling)
    dense.head.weight.data.copy_(network.residual.head.weight)
    dense_chosen, dense_rejected, _ = pooled_features(dense, data, split)
    w, v = network.sarm.head.weight.detach(), network.residual.head.weight.detach()
    return (chosen - rejected) @ w, (dense_chosen - dense_rejected) @ v


def test_fit_exports_a_residualized_sarm_whose_recorded_share_is_its_val_share(fitted):
    network, config = fitted["network"], fitted["config"]
    assert isinstance(network, ResidualSARMNetwork) and config["kind"] == "residual_sarm"
    assert 0 < int((network.sarm.head.weight != 0).sum()) <= 3  # max_features
    a, b = margins(network, fitted["cache"], "val")
    assert b.abs().sum() > 0.02 * a.abs().sum()  # the residual carries a part of the margins (about 5 %)
    assert config["feature_share"] == pytest.approx(feature_share(a, b), abs=1e-5)
    assert config["metrics"]["val/feature_share"] == pytest.approx(config["feature_share"], abs=1e-6)
    assert config["metrics"]["val/accuracy"] == pytest.approx(float(((a + b) > 0).double().mean()), abs=1e-6)


def test_sarm_test_logs_the_full_rewards_accuracy_and_the_test_feature_share(fitted, capsys):
    options = {
        "model": RESIDUAL_SARM,
        "model.init_from": fitted["root"] / "export",
        "data": PAIRS,
        "data.cache_dir": fitted["cache"],
        **QUIET_CPU,
        "trainer.default_root_dir": fitted["root"],
    }
    main(["test", *flags(options)])
    out = capsys.readouterr().out

    def logged(name: str) -> float:
        return float(out.split(name)[1].split()[1].strip("│|"))

    a, b = margins(fitted["network"], fitted["cache"], "test")
    assert logged("test/accuracy") == pytest.approx(float(((a + b) > 0).double().mean()), abs=1e-6)
    assert logged("test/feature_share") == pytest.approx(feature_share(a, b), abs=1e-5)


def test_fitting_an_exported_residualized_sarm_again_is_refused_with_the_way_to_do_it(fitted, capsys):
    options = {
        "model": RESIDUAL_SARM,
        "model.init_from": fitted["root"] / "export",
        "data": PAIRS,
        "data.cache_dir": fitted["cache"],
        "trainer.max_epochs": 1,
        **QUIET_CPU,
        "trainer.default_root_dir": fitted["root"],
    }
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *flags(options)])
    assert exit_info.value.code == 2
    assert "start from its SAE (sae = <dir>/sae)" in capsys.readouterr().err


def test_attribution_and_report_give_the_residual_its_own_term(fitted):
    out = fitted["root"] / "attribution"
    main(attribute(fitted["root"] / "export", fitted["data"], fitted["cache"], out))
    summary = json.loads((out / "summary.json").read_text())
    a, b = margins(fitted["network"], fitted["cache"], "test")
    assert summary["feature_share"] == pytest.approx(feature_share(a, b), abs=1e-5)
    assert summary["accuracy"] == pytest.approx(float(((a + b) > 0).double().mean()), abs=1e-6)
    assert "legibility" not in summary  # the top-m curve has no place for a residual

    from sarm.attribution import read_attribution

    attribution = read_attribution(out)
    # per pair (ascending pair ids, as the cache's split lists them): the residual term, and the margin is the
    # feature terms plus it
    torch.testing.assert_close(attribution.residual, b.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attribution.margin, (a + b).float(), atol=1e-4, rtol=1e-4)
    assert summary["mean_margin"] == pytest.approx(float((a + b).mean()), abs=1e-5)

    report = fitted["root"] / "report"
    main(
        [
            "report",
            *flags(
                {
                    "sarm": fitted["root"] / "export",
                    "data": [str(fitted["data"])],
                    "split_fractions": [0.5, 0.25, 0.25],
                    "cache_dirs": [str(fitted["cache"])],
                    "output": report,
                    "top": 3,
                    "contexts": 2,
                    "steer_top": 2,
                }
            ),
        ]
    )
    content = json.loads((report / "report.json").read_text())
    dataset = content["datasets"][0]
    assert content["model"]["kind"] == "residual_sarm"
    assert dataset["feature_share"] == pytest.approx(summary["feature_share"])
    for pair in dataset["pairs"]:
        assert pair["residual"] is not None
    html = (report / "report.html").read_text()
    assert "residual (dense)" in html and "and the dense residual" in html
