"""A killed `sarm fit` resumes from its last checkpoint and ends where an uninterrupted run ends.

Same exported weights, same validation metrics, for the SAE (a token stream) and the SARM head
(shuffled pairs), whether the kill comes at an epoch boundary (epoch checkpoints) or in the middle
of an epoch (step checkpoints: the resumed run must skip the batches it already trained on).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from commands import SARM_CLI, fit_sae, fit_sarm, model_checkpoint
from conftest import run_command
from safetensors.torch import load_file

from sarm.sae import TopKSAE, save_sae

SCRIPTS = Path(__file__).parent / "scripts"


# Both kinds of run: 4 epochs, seeded, no model summary, checkpoints by the ModelCheckpoint fit_command adds.
RUN = {"trainer.enable_checkpointing": None, "trainer.enable_model_summary": False, "seed_everything": 0}


def sae_fit(tiny_cache, root: Path, *options: str) -> list[str]:
    """An SAE over token activations: 11 batches of 64 tokens per epoch."""
    return fit_sae(
        tiny_cache["cache"],
        root,
        *options,
        epochs=4,
        export=root / "export",
        model__lr=0.003,
        model__warmup_steps=2,
        **RUN,
    )


@pytest.fixture(scope="module")
def frozen_sae(tiny_cache, tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    return save_sae(
        TopKSAE(32, 64, 4), tmp_path_factory.mktemp("sae"), extra={"model_name": tiny_model_dir, "hook_layer": 2}
    )


def sarm_fit(tiny_cache, frozen_sae, root: Path) -> list[str]:
    """A SARM head over cached pairs: 24 training pairs, 5 shuffled batches per epoch."""
    return fit_sarm(tiny_cache["cache"], frozen_sae, root, epochs=4, export=root / "export", data__batch_size=5, **RUN)


def fit_command(fit: list[str], root: Path, *extra: str) -> list[str]:
    return [*SARM_CLI, *fit, *model_checkpoint(root / "checkpoints"), *extra]


def exported(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every tensor of the exported model (keyed by file and name) and its validation metrics."""
    directory = root / "export"
    tensors = {
        f"{path.relative_to(directory)}:{name}": tensor
        for path in sorted(directory.rglob("*.safetensors"))
        for name, tensor in load_file(path).items()
    }
    if (directory / "metrics.json").is_file():  # an SAE
        metrics = json.loads((directory / "metrics.json").read_text())
    else:  # a reward model
        metrics = json.loads((directory / "sarm.json").read_text())["metrics"]
    assert tensors and metrics, directory
    return tensors, metrics


def assert_resumed_run_matches(
    model, tmp_path: Path, kill: list[str], saved_at: tuple[int, int], checkpoints: list[str] = ()
) -> None:
    """Run once whole; once killed by ``kill`` then resumed with ``--ckpt_path last``: same weights, same metrics.

    ``saved_at``: (epoch, global step) of the last checkpoint before the kill.
    """
    run_command(fit_command(model(tmp_path / "whole"), tmp_path / "whole", *checkpoints))
    weights, metrics = exported(tmp_path / "whole")

    root = tmp_path / "killed"
    command = fit_command(model(root), root, *checkpoints)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(command + kill, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (root / "export").exists()
    last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == saved_at

    run_command(command + ["--ckpt_path", "last"])  # the last checkpoint of the run's ModelCheckpoint
    resumed_weights, resumed_metrics = exported(root)
    assert resumed_weights.keys() == weights.keys()
    for name, tensor in weights.items():  # the same computation, so the same bits
        assert torch.equal(resumed_weights[name], tensor), (name, (resumed_weights[name] - tensor).abs().max())
    assert resumed_metrics == metrics


AT_EPOCH_2 = ["--trainer.callbacks+=killer.KillAtEpoch", "--trainer.callbacks.epoch=2"]
# A checkpoint every 4 steps; the kill comes during step 27 (epoch 2, batch 5 of 11): the last
# checkpoint (step 24) holds 2 batches of epoch 2, and steps 25-26 are lost with the process.
SAE_STEPS = ["--trainer.callbacks.every_n_train_steps=4"]
SAE_MID_EPOCH = ["--trainer.callbacks+=killer.KillAtStep", "--trainer.callbacks.step=26"]
# A checkpoint every 3 steps; killed during step 14 (epoch 2, batch 4 of 5), last checkpoint at step 12.
SARM_STEPS = ["--trainer.callbacks.every_n_train_steps=3"]
SARM_MID_EPOCH = ["--trainer.callbacks+=killer.KillAtStep", "--trainer.callbacks.step=13"]


def test_sae_killed_at_an_epoch_boundary_resumes_to_the_same_weights(tiny_cache, tmp_path):
    assert_resumed_run_matches(lambda root: sae_fit(tiny_cache, root), tmp_path, AT_EPOCH_2, (1, 22))


# Masks drawn per step and EMAs in the callback's state; sequence rows drawn from the stream's generator.
ATM_AND_SEQUENCE_ROWS = [
    "--data.sequence_fraction",
    "0.25",
    "--trainer.callbacks+=sarm.callbacks.AdaptiveTemporalMasking",
    "--trainer.callbacks.warmup_steps=10",
    "--trainer.callbacks.update_every=3",
]


@pytest.mark.parametrize("options", [[], ATM_AND_SEQUENCE_ROWS], ids=["topk", "atm-sequence-rows"])
def test_sae_killed_mid_epoch_resumes_to_the_same_weights(tiny_cache, tmp_path, options):
    assert_resumed_run_matches(
        lambda root: sae_fit(tiny_cache, root, *options), tmp_path, SAE_MID_EPOCH, (2, 24), SAE_STEPS
    )


def test_sarm_head_killed_at_an_epoch_boundary_resumes_to_the_same_weights(tiny_cache, frozen_sae, tmp_path):
    assert_resumed_run_matches(lambda root: sarm_fit(tiny_cache, frozen_sae, root), tmp_path, AT_EPOCH_2, (1, 10))


def test_sarm_head_killed_mid_epoch_resumes_to_the_same_weights(tiny_cache, frozen_sae, tmp_path):
    assert_resumed_run_matches(
        lambda root: sarm_fit(tiny_cache, frozen_sae, root), tmp_path, SARM_MID_EPOCH, (2, 12), SARM_STEPS
    )
