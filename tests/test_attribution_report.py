"""`sarm report` reads the attribution it ran: one predict pass, one restored model, the top features of
features.csv, and per-pair numbers equal to scoring the pairs directly."""

import csv
import json
import shutil

import lightning as L
import pytest
import torch

import sarm.reward.export
from sarm.attribution import collect_pair_features, rank_features, steering_effect
from sarm.cache import PairActivationDataModule
from sarm.cli import main
from sarm.reward import SARM
from sarm.reward.export import load_network
from sarm.reward.network import SARMNetwork
from sarm.reward.pooled import STORE_DIR
from sarm.sae import TopKSAE, save_sae


@pytest.fixture(scope="module")
def report(tiny_cache, tmp_path_factory):
    """A tiny SAE + SARM head trained on the toy pairs (as the demo, smaller), then `sarm report` on its test split,
    counting predict passes, pairs scored and exported heads read."""
    root = tmp_path_factory.mktemp("attribution-report")
    shutil.rmtree(tiny_cache["cache"] / STORE_DIR, ignore_errors=True)  # no pooled features kept by other tests
    manifest = json.loads((tiny_cache["cache"] / "manifest.json").read_text())
    torch.manual_seed(0)
    sae = save_sae(TopKSAE(32, 64, 4), root / "sae", extra={"model_name": manifest["model"], "hook_layer": 2})
    L.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    ).fit(
        SARM(sae=str(sae), lr=0.05, export_dir=str(root / "sarm")),
        PairActivationDataModule(str(tiny_cache["cache"]), batch_size=8),
    )
    counts = {"predict": [], "pairs scored": 0, "heads read": 0}
    predict, features, read_tensors = L.Trainer.predict, SARMNetwork.features, sarm.reward.export.read_tensors

    def counted_predict(self, model, *args, **kwargs):
        counts["predict"].append(type(model).__name__)
        return predict(self, model, *args, **kwargs)

    def counted_features(self, hidden, mask=None):
        counts["pairs scored"] += hidden.shape[0] // 2
        return features(self, hidden, mask)

    def counted_read(path, **kwargs):
        counts["heads read"] += str(path).endswith("head.safetensors")
        return read_tensors(path, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(L.Trainer, "predict", counted_predict)
        patch.setattr(SARMNetwork, "features", counted_features)
        patch.setattr(sarm.reward.export, "read_tensors", counted_read)
        main(
            [
                "report",
                "--sarm",
                str(root / "sarm"),
                "--data",
                json.dumps([str(tiny_cache["data"])]),
                "--split_fractions",
                "[0.5, 0.25, 0.25]",
                "--cache_dirs",
                json.dumps([str(tiny_cache["cache"])]),
                "--output",
                str(root / "report"),
                "--top",
                "5",
                "--contexts",
                "2",
                "--steer_top",
                "3",
            ]
        )
    content = json.loads((root / "report" / "report.json").read_text())
    return {"root": root, "counts": counts, "dataset": content["datasets"][0], "manifest": manifest, **tiny_cache}


def test_report_runs_one_predict_pass_through_one_restored_model(report):
    test_pairs = report["manifest"]["split_pairs"]["test"]
    assert report["counts"]["predict"] == ["SARM"]  # the cache is reused: its backbone pass does not run
    # every test pair once, in the predict pass: training kept the train split's pooled features beside the cache,
    # the predict pass keeps the test split's, and legibility's refits read both from there
    assert report["counts"]["pairs scored"] == test_pairs
    assert report["counts"]["heads read"] == 1


def test_report_and_features_csv_name_the_same_top_features_by_one_rule(report):
    with open(report["root"] / "report" / "attribution" / "pairs" / "features.csv") as f:
        rows = list(csv.DictReader(f))
    top = [f["feature"] for f in report["dataset"]["features"]]
    assert len(top) == 5 and top == [int(row["feature"]) for row in rows[:5]]
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    magnitude = [float(row["abs_mean_margin_contribution"]) for row in rows]
    assert magnitude == sorted(magnitude, reverse=True)
    signed = torch.tensor([float(row["mean_margin_contribution"]) for row in rows], dtype=torch.float64)
    assert [int(rows[i]["feature"]) for i in rank_features(signed)] == [int(row["feature"]) for row in rows]
    for feature in report["dataset"]["features"]:  # the signed mean is a column, and it is the contributions' mean
        assert feature["mean_margin_contribution"] == pytest.approx(
            sum(feature["contributions"]) / len(feature["contributions"]), abs=1e-6
        )


def test_report_numbers_equal_scoring_the_pairs_directly(report):
    network, config = load_network(report["root"] / "sarm")
    loader = PairActivationDataModule(str(report["cache"]), 64, "test", pooling=config["pooling"]).predict_dataloader()
    z = collect_pair_features(network, loader)
    order = z["pair"].argsort()  # the report lists pairs by pair id
    zc, zr = z["z_chosen"][order], z["z_rejected"][order]
    dataset = report["dataset"]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(dataset["chosen_rewards"]), network.head(zc), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.tensor(dataset["rejected_rewards"]), network.head(zr), atol=1e-5, rtol=1e-5)
        terms = network.head.contributions(zc) - network.head.contributions(zr)
    for feature in dataset["features"]:
        torch.testing.assert_close(
            torch.tensor(feature["contributions"]), terms[:, feature["feature"]], atol=1e-5, rtol=1e-5
        )
    assert [s["feature"] for s in dataset["steering"]] == [f["feature"] for f in dataset["features"][:3]]
    for row in dataset["steering"]:
        exact = steering_effect(network, zc, zr, [row["feature"]], "zero")
        assert row["accuracy"] == exact["accuracy"] and row["accuracy_before"] == exact["accuracy_before"]
        assert row["mean_margin"] == pytest.approx(exact["mean_margin"], abs=1e-5)
    for pair in dataset["pairs"]:  # each waterfall: the pair's largest terms, largest first
        row = int((z["pair"][order] == pair["pair"]).nonzero())
        expected = terms[row][terms[row].abs().argsort(descending=True)][: len(pair["contributions"])]
        assert [t["value"] for t in pair["contributions"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_attribution_summary_reports_the_per_pair_top_m_share_of_all_terms(report):
    from sarm.attribution.legibility import per_pair_share

    network, config = load_network(report["root"] / "sarm")
    loader = PairActivationDataModule(str(report["cache"]), 64, "test", pooling=config["pooling"]).predict_dataloader()
    z = collect_pair_features(network, loader)
    with torch.no_grad():
        terms = network.head.contributions(z["z_chosen"]) - network.head.contributions(z["z_rejected"])
    (summary_path,) = (report["root"] / "report" / "attribution").glob("*/summary.json")
    shares = json.loads(summary_path.read_text())["top_m_share"]
    assert set(shares) == {"5", "10", "20", "50"}
    for m, share in shares.items():  # every term of every pair counts, not only the stored top features'
        assert share == pytest.approx(per_pair_share(terms, int(m)), abs=1e-5)
    assert shares["5"] <= shares["10"] <= shares["20"] <= shares["50"] <= 1.0


def test_attribution_summary_holds_the_legibility_curve_ranked_on_train_and_the_dense_line(report):
    from sarm.attribution.legibility import top_m_accuracy
    from sarm.reward.fit import best_l2_fit, pair_accuracy
    from sarm.reward.network import DenseNetwork
    from sarm.reward.pooled import pooled_features

    (summary_path,) = (report["root"] / "report" / "attribution").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    curve = summary["legibility"]
    assert curve["split"] == "test" and curve["ms"] == ["5", "10", "20", "50", "100", "all"]
    assert curve["accuracy"]["all"] == pytest.approx(summary["accuracy"])  # all kept: the model itself
    for m in ("5", "10", "20", "50"):  # one definition of the share, reported twice
        assert curve["share"][m] == pytest.approx(summary["top_m_share"][m], abs=1e-6)

    network, config = load_network(report["root"] / "sarm")
    data = PairActivationDataModule(str(report["cache"]), 64, "test", pooling=config["pooling"])
    diff = {}
    for split in ("train", "val", "test"):
        chosen, rejected, _ = pooled_features(network, data, split)
        diff[split] = chosen - rejected
    weight = network.head.weight.detach()
    assert curve["accuracy"] == pytest.approx(top_m_accuracy(diff["train"], diff["test"], weight))
    assert curve["refit_accuracy"] == pytest.approx(top_m_accuracy(diff["train"], diff["test"], weight, refit=True))
    # ranked on the test split instead, the keep-curve would differ at some m: the train split is what ranks
    dense = DenseNetwork(network.input_size(), network.pooling)
    dense_diff = {}
    for split in ("train", "val", "test"):
        chosen, rejected, _ = pooled_features(dense, data, split)
        dense_diff[split] = chosen - rejected
    l2, fit = best_l2_fit(dense_diff)
    assert curve["dense_l2"] == l2
    assert curve["dense_accuracy"] == pytest.approx(pair_accuracy(dense_diff["test"], fit.weight))
    legibility = report["dataset"]["legibility"]  # the report shows the same curve
    assert legibility["accuracy"] == curve["accuracy"] and legibility["dense_accuracy"] == curve["dense_accuracy"]
    html = (report["root"] / "report" / "report.html").read_text()
    assert 'id="legibility"' in html and "accuracy against features kept for" in html
