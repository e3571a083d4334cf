"""scripts/legibility.py on the tiny cache: every row, the budget, the curve, the JSON and the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from legibility import main  # noqa: E402


def test_the_table_measures_the_exported_heads_on_the_test_split(tiny_cache, tmp_path):
    from sarm.cache import PairActivationDataModule
    from sarm.reward import SARM
    from sarm.reward.export import load_network
    from sarm.reward.fit import pair_accuracy
    from sarm.reward.pooled import pooled_features
    from sarm.sae import TopKSAE, save_sae

    cache = str(tiny_cache["cache"])
    data = PairActivationDataModule(cache, batch_size=8)
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(data.hidden_size, 32, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    module = SARM(sae=sae, lr=0.05, export_dir=str(tmp_path / "rm"))
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(module, data)

    main(cache=cache, sarm=str(tmp_path / "rm"), epochs=1, max_features=3, output=str(tmp_path / "out"))
    result = json.loads((tmp_path / "out" / "legibility.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == [
        "dense (trainer)",
        "dense (L-BFGS)",
        "SARM head (trainer)",
        "SARM all, L-BFGS λ=0",
        "SARM all, L-BFGS",
        "SARM budget m=3",
    ]
    network, _ = load_network(tmp_path / "rm")
    chosen, rejected, _ = pooled_features(network, PairActivationDataModule(cache), "test")
    trained = rows["SARM head (trainer)"]
    assert trained["test_accuracy"] == pytest.approx(pair_accuracy(chosen - rejected, network.head.weight))
    assert trained["curve"]["keep"]["all"] == pytest.approx(trained["test_accuracy"])
    assert set(trained["curve"]["refit"]) == {"5", "10", "20", "50", "100", "all"}
    assert rows["SARM budget m=3"]["nonzero"] <= 3 and rows["SARM budget m=3"]["top50_share"] == pytest.approx(1.0)
    assert rows["dense (L-BFGS)"]["nonzero"] == data.hidden_size
    assert (tmp_path / "out" / "legibility.png").stat().st_size > 0
