"""The LightningModule that trains an SAE on cached activations.

loss = FVU-normalized MSE                   Matryoshka: Σ over its nested prefixes (``sarm.sae.matryoshka``)
     + sparsity_coefficient · S_p(f)          ReLU SAEs: L1 at p = 1; PAnnealing lowers p (Lp^p)
     + sparsity_coefficient · L0 loss         JumpReLU: (2/k)(‖f‖₀ − k)² or ‖f‖₀ (``sarm.sae.jumprelu``)
     + auxk_coefficient · AuxK                 dead latents learn to explain the residual (Gao et al.)

AuxK: the residual e = (x − x̂).detach() is reconstructed from the top ``auxk_k`` pre-activations of
the dead latents only, without b_dec (e has no offset to explain), normalized by e's variance
(``sarm.sae.losses``).

What the module reads from its data module is ``ActivationData``: the hidden size and where the
activations came from (``backbone_settings``: model, layer, max_length), written into the exported
``cfg.json``. Planted-attribute coverage is a callback (``sarm.callbacks.coverage.PlantedCoverage``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Literal, Protocol

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from sarm.contract import missing_members, protocol_members
from sarm.errors import SarmInputError
from sarm.io import write_json
from sarm.sae.base import SAEOutput, SparseAutoencoder
from sarm.sae.io import build_sae, save_sae
from sarm.sae.jumprelu import JumpReLUSAE
from sarm.sae.losses import auxk_loss, check_finite, normalized_mse
from sarm.sae.matryoshka import MatryoshkaBatchTopKSAE
from sarm.sae.metrics import LatentFrequency, ReconstructionMetrics
from sarm.sae.relu import sparsity_penalty
from sarm.sae.whitening import CovarianceAccumulator, PCAWhitening, fold_whitening


class ActivationData(Protocol):
    """What ``SAEModule`` reads from its data module (``sarm.cache.TokenActivationDataModule``)."""

    @property
    def hidden_size(self) -> int:
        """Width of the activations (the SAE's ``d_in`` unless given)."""

    @property
    def backbone_settings(self) -> dict:
        """Where the activations came from: ``model``, ``layer``, ``max_length`` (None where unknown)."""


def activation_data(datamodule) -> ActivationData:
    """``datamodule``, once it is known to provide every member of ``ActivationData`` (checked on its class
    and instance without evaluating them: a property may read a cache)."""
    members = protocol_members(ActivationData)
    missing = missing_members(datamodule, ActivationData)
    if datamodule is None or missing:
        what = "no data module" if datamodule is None else f"{type(datamodule).__name__} lacks {', '.join(missing)}"
        raise SarmInputError(
            f"an SAE trains on a data module that provides {', '.join(members)} "
            f"(sarm.cache.TokenActivationDataModule); got {what}"
        )
    return datamodule


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
    """Trains an SAE to reconstruct hidden states; reports held-out FVU, L0, dead/dense latents, cosine, bias.

    Args:
        architecture: ``topk``, ``batchtopk``, ``matryoshka_batchtopk``, ``jumprelu`` or ``relu``.
        n_latents: dictionary size.
        k: active latents per token (TopK) or per token on average (BatchTopK, Matryoshka); JumpReLU's target
            L0 under ``jumprelu_l0: quadratic``, and where its thresholds start (below); unused for ReLU.
        d_in: input width; default: read from the datamodule (the cache's hidden size).
        input_norm: ``standardize`` each token over the hidden dim (SARM's recipe) or ``none``.
        sparsity_coefficient: λ of the sparsity penalty S_p (ReLU SAEs) or of the L0 loss (JumpReLU); 0 for TopK.
        matryoshka_widths: Matryoshka's prefix ends m_1 < … < m_L = n_latents; default n/8, n/4, n/2, n.
        jumprelu_bandwidth: ε of JumpReLU's threshold pseudo-derivative.
        jumprelu_l0: JumpReLU's L0 loss: ``quadratic`` (2/k)(‖f‖₀ − k)², which holds L0 near k (GemmaScope 2,
            SAELens's "quadratic"), or ``step``, the paper's ‖f‖₀. Its thresholds start where BatchTopK at k cuts
            the first batch (one θ for all latents), so a short run starts near its L0 instead of at half the
            dictionary (SAELens starts at θ = 0.01 and trains far longer).
        lr: Adam learning rate (peak).
        warmup_steps: linear warm-up; the rate then decays linearly to 0 at the end of training.
        auxk_coefficient: weight of the AuxK loss (0 turns it off).
        auxk_k: dead latents used by AuxK; default d_in // 2.
        dead_after_tokens: a latent counts as dead after this many training tokens without firing.
        whitening: train in PCA-whitened space (fit in float64 on the first ``whitening_batches``
            training batches); held-out metrics are reported in the original space and the exported
            SAE has the whitening folded in, so it reads raw activations.
        whitening_eps: eigenvalue regularization, relative to the mean eigenvalue.
        whitening_batches: training batches used to estimate mean and covariance.
        scale_activations: multiply inputs by one constant so that their mean norm is sqrt(d_in)
            (estimated on the first batches; folded back into the weights on export). A no-op
            after per-token standardization, useful with ``input_norm: none``.
        export_dir: where the trained SAE is written (``cfg.json`` + ``sae_weights.safetensors``).
    """

    def __init__(
        self,
        architecture: Literal["topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "relu"] = "topk",
        n_latents: int = 4096,
        k: int = 32,
        d_in: int | None = None,
        input_norm: str = "standardize",
        sparsity_coefficient: float = 0.0,
        lr: float = 1e-3,
        warmup_steps: int = 50,
        auxk_coefficient: float = 1 / 32,
        auxk_k: int | None = None,
        dead_after_tokens: int = 1_000_000,
        whitening: bool = False,
        whitening_eps: float = 1e-4,
        whitening_batches: int = 20,
        scale_activations: bool = False,
        matryoshka_widths: list[int] | None = None,
        jumprelu_bandwidth: float = 0.05,
        jumprelu_l0: Literal["quadratic", "step"] = "quadratic",
        export_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # Callbacks steer these (PAnnealing lowers p and rescales the coefficient).
        self.sparsity_p = 1.0
        self.sparsity_coefficient = sparsity_coefficient
        self.sae: SparseAutoencoder | None = None
        # Where the activations came from, as the data module hands it over (cfg.json's model_name,
        # hook_layer, context_size): set in setup, written on export.
        self.provenance: dict = {}
        if d_in is not None:
            self.configure_model()

    def configure_model(self) -> None:
        if self.sae is not None:
            return
        if self.hparams.d_in is None:
            self.hparams.d_in = self.trainer.datamodule.hidden_size
        h = self.hparams
        self.sae = build_sae(
            h.architecture, h.d_in, h.n_latents, h.k, h.input_norm, h.matryoshka_widths, h.jumprelu_bandwidth
        )
        # An affine input map (PCA whitening, or a scalar scale as its special case): identity until
        # fitted at the start of training; its buffers travel in checkpoints and fold into the export.
        self.whitening = PCAWhitening(h.d_in) if h.whitening or h.scale_activations else None
        self.register_buffer("tokens_since_fired", torch.zeros(h.n_latents, dtype=torch.long))
        self.reconstruction = ReconstructionMetrics(h.d_in)
        self.frequency = LatentFrequency(h.n_latents)

    def setup(self, stage: str) -> None:
        h = self.hparams
        if h.architecture != "relu" and not 0 < h.k <= h.n_latents:
            raise SarmInputError(f"model.k = {h.k}: a {h.architecture} SAE keeps 1..n_latents ({h.n_latents}) latents")
        data = activation_data(self.trainer.datamodule)
        if self.sae is not None and self.sae.d_in != data.hidden_size:
            raise SarmInputError(
                f"model.d_in = {self.sae.d_in}, but the activation cache holds hidden states "
                f"of width {data.hidden_size}: leave d_in unset to read it from the cache"
            )
        settings = data.backbone_settings
        provenance = {
            "model_name": settings.get("model"),
            "hook_layer": settings.get("layer"),
            "context_size": settings.get("max_length"),
        }
        self.provenance = {k: v for k, v in provenance.items() if v is not None}

    def on_train_start(self) -> None:
        if self.global_step > 0:  # resumed: b_dec was learned already
            return
        # b_dec starts at the geometric median of a first batch (Gao et al.), so the encoder sees centred inputs.
        batches = iter(self.trainer.datamodule.train_dataloader())
        first = next(batches).to(self.device)
        if self.hparams.scale_activations and not self.hparams.whitening:
            scale = self.sae.d_in**0.5 / self.sae.preprocess(first).norm(dim=-1).mean()
            self.whitening.whiten_matrix.copy_(torch.eye(self.sae.d_in, device=scale.device) * scale)
            self.whitening.unwhiten_matrix.copy_(torch.eye(self.sae.d_in, device=scale.device) / scale)
            self.whitening.to(self.device)
        elif self.whitening is not None:
            accumulator = CovarianceAccumulator(self.sae.d_in)
            for batch in itertools.chain([first], itertools.islice(batches, self.hparams.whitening_batches - 1)):
                accumulator.update(self.sae.preprocess(batch))
            self.whitening.load_state_dict(accumulator.finalize(self.hparams.whitening_eps).state_dict())
            self.whitening.to(self.device)
        with torch.no_grad():
            self.sae.b_dec.copy_(geometric_median(self._input(first)))
            if isinstance(self.sae, JumpReLUSAE):  # θ where BatchTopK at k cuts this batch (module docstring)
                pre = self.sae.pre_activations(self._input(first)).flatten()
                self.sae.threshold.fill_(float(pre.topk(min(self.hparams.k * first.shape[0], pre.numel())).values[-1]))
                self.sae.project()
        # Under DDP each rank saw its own first batches: every rank takes rank 0's estimates.
        broadcast = [self.sae.b_dec.data, *(self.whitening.buffers() if self.whitening is not None else [])]
        if isinstance(self.sae, JumpReLUSAE):
            broadcast.append(self.sae.threshold.data)
        for tensor in broadcast:
            tensor.copy_(self.trainer.strategy.broadcast(tensor, src=0))

    def _input(self, batch: torch.Tensor) -> torch.Tensor:
        """What the SAE reconstructs: the preprocessed batch, whitened if asked for."""
        x = self.sae.preprocess(batch)
        return x if self.whitening is None else self.whitening.whiten(x).float()

    @torch.no_grad()
    def latents(self, activations: torch.Tensor) -> torch.Tensor:
        """``[N, n_latents]`` latents of raw activations ``[N, d_in]``, as the SAE in training computes them
        (whitened when it trains whitened), for callbacks that read features (``PlantedCoverage``)."""
        return self.sae.reconstruct(self._input(activations.to(self.device))).latents

    def training_step(self, x: torch.Tensor, batch_idx: int) -> dict:
        loss, logs, out = self.training_loss(x)
        check_finite(loss, "SAE loss", self.global_step, x)
        self.log_dict(logs, prog_bar=True)
        # Latents go to callbacks (PAnnealing, AdaptiveTemporalMasking) in on_train_batch_end, as a
        # dense tensor or, from TopK SAEs, as TopLatents (sarm.sae.base.as_dense turns either dense).
        return {"loss": loss, "latents": out.compact_latents()}

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict, SAEOutput]:
        """(loss, values to log, forward output) of one batch; updates dead-latent tracking."""
        out = self.sae.reconstruct(self._input(x))
        reconstruction = normalized_mse(out.x, out.x_hat)
        loss = reconstruction
        logs = {"train/fvu": reconstruction}
        if isinstance(self.sae, MatryoshkaBatchTopKSAE):  # every prefix reconstructs; the last one is x̂ itself
            loss = sum(normalized_mse(out.x, x_hat) for _, x_hat in self.sae.prefix_reconstructions(out.latents))
            logs["train/matryoshka"] = loss
        if isinstance(self.sae, JumpReLUSAE):
            target = self.hparams.k if self.hparams.jumprelu_l0 == "quadratic" else None
            penalty = self.sae.l0_penalty(out.pre, target)
            loss = loss + self.sparsity_coefficient * penalty
            logs["train/l0_loss"] = penalty
        elif self.sparsity_coefficient:
            penalty = sparsity_penalty(out.latents, self.sae.W_dec, self.sparsity_p)
            loss = loss + self.sparsity_coefficient * penalty
            logs["train/sparsity"] = penalty

        counts = out.firing_counts()
        if self._trainer is not None and self.trainer.world_size > 1:  # dead means dead on every rank
            counts = self.trainer.strategy.reduce(counts.float(), reduce_op="sum")
        fired = counts > 0
        self.tokens_since_fired += x.shape[0] * (self.trainer.world_size if self._trainer is not None else 1)
        self.tokens_since_fired[fired] = 0
        dead = self.tokens_since_fired > self.hparams.dead_after_tokens
        if self.hparams.auxk_coefficient:
            aux = auxk_loss(self.sae, out.x, out.x - out.x_hat, dead, self.hparams.auxk_k or self.sae.d_in // 2)
            loss = loss + self.hparams.auxk_coefficient * aux
            logs["train/auxk"] = aux
        logs["train/dead_fraction"] = dead.float().mean()
        logs["train/l0"] = out.l0()
        return loss, logs, out

    def on_before_optimizer_step(self, optimizer) -> None:
        self.sae.remove_parallel_decoder_grad()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The step, then unit decoder rows, both before any callback's ``on_train_batch_end``.

        Not in the module's own ``on_train_batch_end``: that runs after the callbacks', so a step
        checkpoint (ModelCheckpoint) would hold a decoder the uninterrupted run never trained with.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.sae.normalize_decoder()
        if isinstance(self.sae, JumpReLUSAE):
            self.sae.project()

    def _evaluate(self, x: torch.Tensor) -> None:
        out = self.sae.reconstruct(self._input(x))
        if self.whitening is None:
            self.reconstruction.update(out.x, out.x_hat)
        else:  # reported in the original (preprocessed) space
            self.reconstruction.update(self.whitening.unwhiten(out.x), self.whitening.unwhiten(out.x_hat))
        self.frequency.update(out.firing_counts(), out.x.numel() // out.x.shape[-1])

    def _log_evaluation(self, prefix: str) -> None:
        metrics = {**self.reconstruction.compute(), **self.frequency.compute()}
        self.log_dict({f"{prefix}/{k}": v for k, v in metrics.items()}, prog_bar=prefix == "val")
        self.reconstruction.reset()
        self.frequency.reset()

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(x)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def build_optimizer(self) -> torch.optim.Optimizer:
        # The fused kernel: one pass over all parameters instead of a loop of small ops (scripts/bench_kernels.py).
        fused = self.sae.W_enc.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.sae.parameters(), lr=self.hparams.lr, betas=(0.9, 0.999), fused=fused)

    def configure_optimizers(self):
        optimizer = self.build_optimizer()
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
        sae = self.sae if self.whitening is None else fold_whitening(self.sae, self.whitening)
        save_sae(sae, directory, extra=self.provenance)
        write_json(directory / "metrics.json", metrics)
        print(f"sarm: SAE written to {directory} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
