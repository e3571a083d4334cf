"""SARM: a reward model whose scalar head reads the features of a frozen SAE.

    h = backbone_L(text)[last response token]        (here: read from the activation cache)
    z = TopK-SAE(standardize(h))                     frozen
    reward = w · z                                   head: no bias, zero init

Bradley–Terry loss on chosen/rejected pairs. Because the SAE and backbone are frozen in this mode
("head only"), training reads cached last-token activations instead of re-running the backbone.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric

from sarm.reward.export import load_sarm, save_sarm
from sarm.reward.head import SparseRewardHead
from sarm.reward.loss import bradley_terry_loss
from sarm.sae.io import load_sae


class SARM(L.LightningModule):
    """SAE-enhanced reward model, head-only training on cached hidden states.

    Args:
        sae: directory of a trained SAE (``cfg.json`` + ``sae_weights.safetensors``), or of an
            exported SARM to continue from (its ``sae/`` and head are loaded).
        lr: AdamW learning rate of the head.
        weight_decay: AdamW weight decay of the head.
        head_l1: L1 penalty on the head's weights (sparser explanations).
        export_dir: where the trained SARM is written for inference without Lightning.
    """

    def __init__(
        self,
        sae: str,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        head_l1: float = 0.0,
        export_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if (Path(sae) / "sarm.json").is_file():
            self.sae, self.head, _ = load_sarm(sae)
        else:
            self.sae = load_sae(sae)
            self.head = SparseRewardHead(self.sae.n_latents)
        self.sae.requires_grad_(False).eval()
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": MeanMetric() for stage in ("train", "val", "test") for name in ("accuracy", "margin")
        })

    def train(self, mode: bool = True):
        super().train(mode)
        self.sae.eval()  # frozen: never in training mode
        return self

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense SAE latents of hidden states ``[..., d] -> [..., n_latents]`` (zero outside the top k)."""
        return self.sae.encode(hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Reward of each hidden state."""
        return self.head(self.features(hidden))

    def _step(self, batch: dict, stage: str) -> dict:
        z_chosen, z_rejected = self.features(batch["chosen"]), self.features(batch["rejected"])
        chosen, rejected = self.head(z_chosen), self.head(z_rejected)
        loss = bradley_terry_loss(chosen, rejected, batch.get("margin"))
        if self.hparams.head_l1 and stage == "train":
            loss = loss + self.hparams.head_l1 * self.head.weight.abs().sum()
        n = chosen.shape[0]
        acc, margin = self.metrics[f"{stage}_accuracy"], self.metrics[f"{stage}_margin"]
        acc.update((chosen > rejected).float())
        margin.update(chosen - rejected)
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/accuracy": acc, f"{stage}/margin": margin},
            prog_bar=True, batch_size=n, on_step=stage == "train", on_epoch=True,
        )
        return {"loss": loss, "pair": batch["pair"], "chosen_reward": chosen.detach(),
                "rejected_reward": rejected.detach(), "z_chosen": z_chosen, "z_rejected": z_rejected}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        z_chosen, z_rejected = self.features(batch["chosen"]), self.features(batch["rejected"])
        return {"pair": batch["pair"], "chosen_reward": self.head(z_chosen), "rejected_reward": self.head(z_rejected),
                "z_chosen": z_chosen, "z_rejected": z_rejected}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.head.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @rank_zero_only
    def on_train_end(self) -> None:
        if self.hparams.export_dir is None:
            return
        manifest = self.trainer.datamodule.cache.manifest
        backbone = {"model": manifest["model"], "layer": manifest["layer"],
                    "max_length": manifest["settings"]["max_length"], "tokens": manifest["settings"]["tokens"]}
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        save_sarm(self.hparams.export_dir, self.sae, self.head, backbone, metrics)
        print(f"sarm: SARM written to {self.hparams.export_dir} "
              + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
