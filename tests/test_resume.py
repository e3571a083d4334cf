"""A killed `sarm fit` resumes from its last checkpoint and ends where an uninterrupted run ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_command

SCRIPTS = Path(__file__).parent / "scripts"


def fit_command(tiny_cache, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sarm.cli", "fit", "--model", "sarm.sae.SAEModule", "--model.n_latents", "64",
            "--model.k", "4", "--model.lr", "0.003", "--model.warmup_steps", "2",
            "--model.export_dir", str(root / "sae"), "--data", "sarm.data.activations.TokenActivationDataModule",
            "--data.cache_dir", str(tiny_cache["cache"]), "--data.batch_size", "64", "--trainer.max_epochs", "4",
            "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(root), "--seed_everything", "0",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            f"--trainer.callbacks.dirpath={root / 'checkpoints'}", "--trainer.callbacks.save_last=true",
            *extra]


def test_killed_sae_fit_resumes_from_last_and_matches_the_uninterrupted_run(tiny_cache, tmp_path):
    run_command(fit_command(tiny_cache, tmp_path / "whole"))
    expected = json.loads((tmp_path / "whole" / "sae" / "metrics.json").read_text())

    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(fit_command(tiny_cache, root, "--trainer.callbacks+=killer.KillAtEpoch",
                                        "--trainer.callbacks.epoch=2"), env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert (root / "checkpoints" / "last.ckpt").is_file() and not (root / "sae" / "metrics.json").exists()

    run_command(fit_command(tiny_cache, root, "--ckpt_path", str(root / "checkpoints" / "last.ckpt")))
    resumed = json.loads((root / "sae" / "metrics.json").read_text())
    for key in ("val/fvu", "val/l0", "val/cosine"):
        assert resumed[key] == pytest.approx(expected[key], rel=1e-4), key
