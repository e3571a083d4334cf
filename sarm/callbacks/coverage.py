"""Planted-attribute coverage of an SAE in training, as a callback.

At the end of each validation epoch (not the sanity check), the SAE's latents of the validation
split's last tokens are scored against the planted labels (``sarm.sae.coverage.coverage``: the best
single-latent F1 per property) and logged as

    val/coverage                mean over the deciding attributes ("<attribute>:chosen|rejected")
    val/coverage_distractors    mean over the distractors

which ``SAEModule`` writes to ``metrics.json`` with its other ``val/`` metrics. The data module hands
over the labels (``PlantedData``, e.g. ``sarm.cache.TokenActivationDataModule``); the SAE module
computes latents (``SAEModule.latents``). On data without planted attributes it says so once and
logs nothing.
"""

from __future__ import annotations

from typing import Protocol

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from sarm.errors import SarmInputError
from sarm.sae.coverage import coverage


class PlantedData(Protocol):
    def planted(self, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """The split's sequences as (last-token activations ``[N, d]``, labels ``{property: bool [N]}``), or
        None when the data carries no planted attribute."""


class PlantedCoverage(L.Callback):
    """Logs ``val/coverage`` and ``val/coverage_distractors`` of an SAE on planted-attribute data."""

    def __init__(self):
        self.sequences: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if not callable(getattr(data, "planted", None)):
            raise SarmInputError(
                f"PlantedCoverage reads planted labels from the data module's planted(split) "
                f"(sarm.cache.TokenActivationDataModule); {type(data).__name__} has none"
            )
        if not callable(getattr(pl_module, "latents", None)):
            raise SarmInputError(
                f"PlantedCoverage scores an SAE's latents (sarm.sae.SAEModule.latents); "
                f"{type(pl_module).__name__} has none"
            )
        self.sequences = data.planted("val")
        if self.sequences is None:
            rank_zero_warn("PlantedCoverage: the data holds no planted attributes; no coverage is logged")

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.sequences is None:
            return
        activations, labels = self.sequences
        result = coverage(pl_module.latents(activations).cpu(), labels)
        pl_module.log_dict(
            {
                "val/coverage": float(result["mean"]["f1"] or 0.0),
                "val/coverage_distractors": float(result["mean_distractors"]["f1"] or 0.0),
            }
        )
