"""`sarm report` end to end on a tiny SARM: attribution, explanations, steering, the HTML."""

import json

import lightning as L
import torch
from conftest import write_toy_pairs

from sarm.cache import ActivationCache, PairActivationDataModule
from sarm.cli import main
from sarm.data.preference import load_preferences
from sarm.reward import SARM
from sarm.reward.inference import RewardModel
from sarm.sae import TopKSAE, save_sae


def test_report_over_two_datasets_writes_a_self_contained_page(tiny_cache, tmp_path):
    manifest = json.loads((tiny_cache["cache"] / "manifest.json").read_text())
    torch.manual_seed(0)
    sae = save_sae(TopKSAE(32, 64, 4), tmp_path / "sae", extra={"model_name": manifest["model"], "hook_layer": 2})
    model = SARM(sae=str(sae), lr=0.05, export_dir=str(tmp_path / "sarm"))
    L.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    ).fit(model, PairActivationDataModule(str(tiny_cache["cache"]), batch_size=8))
    other = write_toy_pairs(tmp_path / "other.jsonl", n=32)
    main(
        [
            "report",
            "--sarm",
            str(tmp_path / "sarm"),
            "--data",
            json.dumps([str(tiny_cache["data"]), str(other)]),
            "--split_fractions",
            "[0.5, 0.25, 0.25]",
            "--cache_dirs",
            json.dumps([str(tiny_cache["cache"]), str(tmp_path / "other-cache")]),
            "--output",
            str(tmp_path / "report"),
            "--top",
            "4",
            "--contexts",
            "3",
            "--steer_top",
            "2",
        ]
    )
    html = (tmp_path / "report" / "report.html").read_text()
    content = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [d["name"] for d in content["datasets"]] == ["pairs", "other"]
    first = content["datasets"][0]
    assert first["n_pairs"] == manifest["split_pairs"]["test"] and len(first["features"]) == 4
    assert len(first["steering"]) == 2 and len(first["pairs"]) == 4
    for page in content["feature_pages"]:
        assert f'id="feature-{page["feature"]}"' in html
        assert page["explanation"]["text"] and len(page["contexts"]) <= 3
    assert content["comparison"]["a"] == "pairs" and content["comparison"]["b"] == "other"
    assert "https://" not in html and "<script" not in html

    # The rewards are the model's: the test split's texts scored afresh through the exported SARM (backbone
    # and all, not the cache) give the report's rewards, up to the cache's bfloat16 rounding of hidden states.
    texts = load_preferences(tiny_cache["data"])
    test = ActivationCache(str(tiny_cache["cache"])).pair_indices("test").tolist()
    scorer = RewardModel.load(tmp_path / "sarm")
    chosen, rejected = (
        scorer.score([texts[i].prompt for i in test], [getattr(texts[i], side) for i in test]).rewards
        for side in ("chosen", "rejected")
    )
    scale = float(torch.cat([chosen, rejected]).abs().max())
    tolerance = 0.01 * scale + 1e-6
    assert torch.allclose(torch.tensor(first["chosen_rewards"]).sort().values, chosen.sort().values, atol=tolerance)
    assert torch.allclose(torch.tensor(first["rejected_rewards"]).sort().values, rejected.sort().values, atol=tolerance)
    assert abs(first["mean_margin"] - float((chosen - rejected).mean())) < 2 * tolerance
    for pair in first["pairs"]:  # each waterfall's pair, found by its index in the data
        row = test.index(pair["pair"])
        assert abs(pair["chosen_reward"] - float(chosen[row])) < tolerance
        assert abs(pair["rejected_reward"] - float(rejected[row])) < tolerance
