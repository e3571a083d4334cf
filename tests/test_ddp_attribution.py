"""RewardAttribution under DDP (2 CPU processes, gloo) gives the numbers of a single process."""

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_command

from sarm.reward.export import save_reward_model
from sarm.reward.network import SARMNetwork
from sarm.sae import TopKSAE

SCRIPT = Path(__file__).parent / "scripts" / "attribution_run.py"


def test_two_processes_give_the_attribution_sums_of_one(tiny_cache, tmp_path):
    torch.manual_seed(0)
    network = SARMNetwork(TopKSAE(32, 64, 8))
    network.head.weight.data.normal_()
    manifest = json.loads((tiny_cache["cache"] / "manifest.json").read_text())
    save_reward_model(
        tmp_path / "sarm", network, {"model": manifest["model"], "layer": manifest["layer"], "max_length": 48}
    )
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"attribution-{devices}"
        run_command(
            [sys.executable, str(SCRIPT), str(tmp_path / "sarm"), str(tiny_cache["cache"]), str(out), str(devices)]
        )
        results[devices] = {
            "features": json.loads((out / "features.json").read_text())["features"],
            "summary": json.loads((out / "summary.json").read_text()),
            "pairs": sorted(csv.DictReader(open(out / "pairs.csv")), key=lambda r: int(r["pair"])),
        }
    one, two = results[1], results[2]
    test_pairs = manifest["split_pairs"]["test"]
    assert one["summary"]["pairs"] == two["summary"]["pairs"] == test_pairs  # no pair counted twice
    # Sums are float64 and reduced exactly; the features themselves are float32 forward passes over
    # differently composed batches, which may differ in the last bits (GEMM blocking).
    close = dict(rel=1e-5, abs=1e-7)
    assert one["summary"]["accuracy"] == two["summary"]["accuracy"]
    assert two["summary"]["mean_margin"] == pytest.approx(one["summary"]["mean_margin"], **close)
    assert len(one["features"]) == len(two["features"]) > 0
    for a, b in zip(one["features"], two["features"]):
        assert a["feature"] == b["feature"]
        for column, value in a.items():
            if isinstance(value, float):
                assert b[column] == pytest.approx(value, **close), (a["feature"], column)
    assert [r["pair"] for r in one["pairs"]] == [r["pair"] for r in two["pairs"]]  # every pair, once
    for a, b in zip(one["pairs"], two["pairs"]):
        assert float(b["margin"]) == pytest.approx(float(a["margin"]), **close)
