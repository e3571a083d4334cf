"""The LightningModule that trains an SAE on cached activations."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from sarm.io import write_json
from sarm.sae.io import save_sae
from sarm.sae.metrics import DeadFraction, FractionOfVarianceUnexplained, MeanL0
from sarm.sae.topk import TopKSAE


def geometric_median(x: torch.Tensor, iterations: int = 50, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimizing the sum of Euclidean distances to the rows of x."""
    median = x.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() < eps * median.norm().clamp_min(1.0):
            return new
        median = new
    return median


class SAEModule(L.LightningModule):
    """Trains a TopK SAE to reconstruct hidden states; reports FVU, L0 and dead latents on held-out data.

    Args:
        n_latents: dictionary size.
        k: active latents per token.
        d_in: input width; default: read from the datamodule (the cache's hidden size).
        input_norm: ``standardize`` each token over the hidden dim (SARM's recipe) or ``none``.
        lr: Adam learning rate (peak).
        warmup_steps: linear warm-up; the rate then decays linearly to 0 at the end of training.
        dead_after_tokens: a latent counts as dead after this many training tokens without firing.
        export_dir: where the trained SAE is written (``cfg.json`` + ``sae_weights.safetensors``).
    """

    def __init__(
        self,
        n_latents: int = 4096,
        k: int = 32,
        d_in: int | None = None,
        input_norm: str = "standardize",
        lr: float = 1e-3,
        warmup_steps: int = 50,
        dead_after_tokens: int = 1_000_000,
        export_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sae: TopKSAE | None = None
        if d_in is not None:
            self.configure_model()

    def configure_model(self) -> None:
        if self.sae is not None:
            return
        d_in = self.hparams.d_in
        if d_in is None:
            d_in = self.hparams.d_in = self.trainer.datamodule.hidden_size
        self.sae = TopKSAE(d_in, self.hparams.n_latents, self.hparams.k, self.hparams.input_norm)
        self.register_buffer("tokens_since_fired", torch.zeros(self.hparams.n_latents, dtype=torch.long))
        self.val_fvu = FractionOfVarianceUnexplained(d_in)
        self.val_l0 = MeanL0()
        self.val_dead = DeadFraction(self.hparams.n_latents)

    def on_train_start(self) -> None:
        if self.global_step > 0:  # resumed: b_dec was learned already
            return
        # b_dec starts at the geometric median of a first batch (Gao et al.), so the encoder sees centred inputs.
        first = next(iter(self.trainer.datamodule.train_dataloader())).to(self.device)
        with torch.no_grad():
            self.sae.b_dec.copy_(geometric_median(self.sae.preprocess(first)))

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.sae(x)
        error = (out.x - out.x_hat).pow(2).sum(-1)
        variance = (out.x - out.x.mean(0)).pow(2).sum(-1)
        loss = error.mean() / variance.mean()  # normalized MSE = batch FVU
        fired = torch.zeros_like(self.tokens_since_fired, dtype=torch.bool)
        fired[out.indices[out.values > 0]] = True
        self.tokens_since_fired += x.shape[0]
        self.tokens_since_fired[fired] = 0
        dead = (self.tokens_since_fired > self.hparams.dead_after_tokens).float().mean()
        self.log_dict({"train/fvu": loss, "train/dead_fraction": dead}, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.sae.remove_parallel_decoder_grad()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.sae.normalize_decoder()

    def _evaluate(self, x: torch.Tensor, prefix: str) -> None:
        out = self.sae(x)
        self.val_fvu.update(out.x, out.x_hat)
        self.val_l0.update(out.values)
        self.val_dead.update(out.values, out.indices)
        self.log_dict(
            {f"{prefix}/fvu": self.val_fvu, f"{prefix}/l0": self.val_l0, f"{prefix}/dead_fraction": self.val_dead},
            prog_bar=True, batch_size=x.shape[0],
        )

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.hparams.lr, betas=(0.9, 0.999))
        total = self.trainer.estimated_stepping_batches  # inf when the run is bounded by time only
        warmup = self.hparams.warmup_steps if math.isinf(total) else min(self.hparams.warmup_steps, int(total) // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if math.isinf(total):
                return 1.0
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @rank_zero_only
    def on_train_end(self) -> None:
        if self.hparams.export_dir is None:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        directory = Path(self.hparams.export_dir)
        save_sae(self.sae, directory, extra=self._provenance())
        write_json(directory / "metrics.json", metrics)
        print(f"sarm: SAE written to {directory} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)

    def _provenance(self) -> dict:
        """Where the SAE's inputs came from (model, layer), when trained from a cache."""
        cache = getattr(self.trainer.datamodule, "cache", None)
        if cache is None:
            return {}
        return {"model_name": cache.manifest["model"], "hook_layer": cache.manifest["layer"],
                "context_size": cache.manifest["settings"]["max_length"]}
