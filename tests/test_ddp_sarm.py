"""SARM head training on 2 CPU processes (DDP, gloo) reaches what 1 process reaches."""

import json

import pytest
import torch
from commands import SARM_CLI, fit_sarm
from conftest import run_command

from sarm.sae import TopKSAE, save_sae


def test_two_processes_train_the_sarm_head_like_one(tiny_cache, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    sae = save_sae(TopKSAE(32, 64, 4), tmp_path / "sae", extra={"model_name": tiny_model_dir, "hook_layer": 2})
    metrics = {}
    for devices, batch in ((1, 16), (2, 8)):  # the same global batch
        out = tmp_path / f"sarm-{devices}"
        extra = ["--trainer.devices", "2", "--trainer.strategy", "ddp"] if devices == 2 else []
        run_command(
            [
                *SARM_CLI,
                *fit_sarm(
                    tiny_cache["cache"],
                    sae,
                    out,
                    *extra,
                    epochs=5,
                    export=out / "export",
                    data__batch_size=batch,
                    seed_everything=0,
                ),
            ]
        )
        metrics[devices] = json.loads((out / "export" / "sarm.json").read_text())["metrics"]
    # Both see every validation pair once; the shuffles differ (DistributedSampler), so the heads do slightly.
    assert metrics[2]["val/accuracy"] == pytest.approx(metrics[1]["val/accuracy"], abs=1 / 12 + 1e-6)
    assert metrics[2]["val/loss"] == pytest.approx(metrics[1]["val/loss"], rel=0.2)
