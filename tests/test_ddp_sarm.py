"""SARM head training on 2 CPU processes (DDP, gloo) reaches what 1 process reaches."""

import json
import sys

import pytest
import torch
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
                sys.executable,
                "-m",
                "sarm.cli",
                "fit",
                "--model",
                "sarm.reward.SARM",
                "--model.sae",
                str(sae),
                "--model.lr",
                "0.05",
                "--model.export_dir",
                str(out / "export"),
                "--data",
                "sarm.cache.PairActivationDataModule",
                "--data.cache_dir",
                str(tiny_cache["cache"]),
                "--data.batch_size",
                str(batch),
                "--trainer.max_epochs",
                "5",
                "--trainer.accelerator",
                "cpu",
                "--trainer.logger",
                "false",
                "--trainer.enable_checkpointing",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.default_root_dir",
                str(out),
                "--seed_everything",
                "0",
                *extra,
            ]
        )
        metrics[devices] = json.loads((out / "export" / "sarm.json").read_text())["metrics"]
    # Both see every validation pair once; the shuffles differ (DistributedSampler), so the heads do slightly.
    assert metrics[2]["val/accuracy"] == pytest.approx(metrics[1]["val/accuracy"], abs=1 / 12 + 1e-6)
    assert metrics[2]["val/loss"] == pytest.approx(metrics[1]["val/loss"], rel=0.2)
