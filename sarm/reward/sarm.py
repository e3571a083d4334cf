"""SARM: a reward model whose scalar head reads the features of an SAE.

    h = backbone_L(text)                 residual stream after layer L (cached, or run with LoRA)
    z = pool(SAE(standardize(h)))        TopK latents (or pre-activations) at the last response
                                         token, or their mean over the response
    reward = w · z                       no bias, zero init: an exact sum of feature contributions

The SAE is frozen in modes ``head`` and ``lora``; in ``joint`` it trains too, with its own
reconstruction loss on the detached hidden states so that it stays a faithful dictionary.

Two starts, one argument each: ``sae`` (an SAE directory: a fresh head on it) or ``init_from`` (an
exported SARM: its SAE, head, pooling and features). ``SARM(init_from=dir)`` is how code gets a
trained SARM back as a LightningModule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object
from sarm.reward.export import CONFIG
from sarm.reward.module import RewardModelModule
from sarm.reward.network import SARMNetwork
from sarm.reward.pooling import last_positions
from sarm.sae.io import load_sae
from sarm.sae.losses import normalized_mse
from sarm.sae.saelens_layout import trained_on


class SARM(RewardModelModule):
    """SAE-enhanced reward model.

    Args:
        sae: directory of a trained SAE (sarm, SAELens or sparsify layout), for a new head on it. Not an
            exported SARM: restart from one with ``init_from``. Unneeded with ``init_from``; given
            both, the export's SAE is used (the one its head was trained with) and must have this one's shape.
        features: the head reads the SAE's TopK ``latents`` or its ``pre``-activations. Default:
            ``init_from``'s features, else ``latents``.
        reconstruction_coefficient: weight λ of the SAE's reconstruction loss in ``joint`` mode.
        sae_lr: learning rate of the SAE in ``joint`` mode.
        max_features: a few-feature head: at the end of training the head is replaced by one with at most this
            many non-zero weights, fitted to convergence on the train split (``sarm.reward.fit.budget_head``:
            backward elimination by the one ranking rule, then an unpenalized refit), and exported like any head.
            Head mode on cached activations only (the refit reads the train split's pooled features).
        budget_l2: the L2 penalty of the elimination's fits (``budget_head``'s ``l2``); None: chosen on val from
            ``BUDGET_L2_GRID`` (``best_budget_head``).
        **kwargs: the shared arguments of ``RewardModelModule`` (mode, pooling, lr, LoRA, init_from,
            export_dir, ...).
    """

    kind = "sarm"

    def __init__(
        self,
        sae: str | None = None,
        features: Literal["latents", "pre"] | None = None,
        reconstruction_coefficient: float = 1.0,
        sae_lr: float = 1e-4,
        max_features: int | None = None,
        budget_l2: float | None = 1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        features = self.from_export("features", features, "latents")
        if sae is not None and (Path(sae) / CONFIG).is_file():
            raise SarmInputError(
                f"sae = {sae}: an exported reward model ({CONFIG}), not an SAE; restart from it "
                f"with init_from = {sae} (its SAE, head, pooling and features)"
            )
        if self.hparams.init_from is not None:
            self.network = self.restart_network()
            if sae is not None:
                self._check_same_shape(load_sae(sae))
        elif sae is not None:
            self.network = SARMNetwork(load_sae(sae), self.pooling, features)
            cfg = Path(sae) / "cfg.json"  # present unless the SAE is sparsify's
            fields = Fields(read_json_object(cfg) if cfg.is_file() else {}, cfg)
            # sarm's metadata.sarm, an older sarm export's top level, or SAELens's metadata (model_name, hook_name)
            self.trained_on = {**trained_on(fields), "by": "the SAE"}
        else:
            raise SarmInputError(
                "a SARM starts from an SAE (sae = <SAE directory>) or restarts from an exported "
                "SARM (init_from = <export directory>); neither was given"
            )
        if max_features is not None and (max_features < 1 or self.hparams.mode != "head"):
            raise SarmInputError(
                f"max_features = {max_features} (mode {self.hparams.mode!r}): expected a count >= 1, in mode 'head'"
            )
        joint = self.hparams.mode == "joint"
        self.sae.requires_grad_(joint)
        if not joint:
            self.sae.eval()

    def _check_same_shape(self, given) -> None:
        ours = self.sae
        if (given.d_in, given.n_latents) != (ours.d_in, ours.n_latents):
            raise SarmInputError(
                f"sae = {self.hparams.sae} ({given.d_in} → {given.n_latents} latents) is not the SAE "
                f"of init_from = {self.hparams.init_from} ({ours.d_in} → {ours.n_latents}): "
                "leave sae unset, the export carries its own"
            )

    @property
    def sae(self):
        return self.network.sae

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.mode != "joint":
            self.sae.eval()  # frozen: never in training mode
        return self

    def trainable_parameters(self) -> list[dict]:
        groups = super().trainable_parameters()
        if self.hparams.mode == "joint":
            groups.append({"params": list(self.sae.parameters()), "lr": self.hparams.sae_lr, "weight_decay": 0.0})
        return groups

    def extra_loss(self, scored: dict) -> tuple[torch.Tensor, dict]:
        if self.hparams.mode != "joint":
            return super().extra_loss(scored)
        # Reconstruct the tokens the reward reads, from hidden states cut off from the backbone.
        hidden, mask = scored["hidden"].detach(), scored["mask"].bool()
        if self.pooling == "mean":
            tokens = hidden[mask]
        else:
            tokens = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]
        out = self.sae(tokens)
        fvu = normalized_mse(out.x, out.x_hat)
        return self.hparams.reconstruction_coefficient * fvu, {"train/sae_fvu": fvu}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.mode == "joint":
            self.sae.remove_parallel_decoder_grad()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log_legibility()

    def log_legibility(self) -> None:
        """On cached activations: the test split's top-m accuracy, kept and refit (the train split ranks the
        features), and the per-pair top-m share (``sarm.attribution.legibility``), logged as ``test/top<m>_...``."""
        from sarm.attribution.legibility import describe, legibility_curve

        data = self.trainer.datamodule
        if data is None or data.yields_tokens:  # the train split's features would need the backbone run again
            return
        with torch.inference_mode(False):  # the test loop's inference mode would bar the refits' autograd
            curve = legibility_curve(self.network, data, "test", dense=False)
        if curve is None:
            return
        logs = {}
        for m in curve["ms"]:
            logs[f"test/top{m}_accuracy"] = curve["accuracy"][m]
            logs[f"test/top{m}_refit_accuracy"] = curve["refit_accuracy"][m]
            if m in curve["share"]:
                logs[f"test/top{m}_share"] = curve["share"][m]
        self.log_dict(logs)
        if self.trainer.is_global_zero:
            print(describe(curve), flush=True)

    def on_train_end(self) -> None:
        if self.hparams.max_features is not None:
            self.fit_budget_head()
        super().on_train_end()  # exports the head, the budget head when there is one

    def fit_budget_head(self) -> None:
        """Replace the trained head by ``budget_head`` on the train split; its validation reward mean and std
        become the export's ``reward_norm`` and, with its validation accuracy, the export's ``val/`` metrics."""
        from sarm.reward.fit import best_budget_head, budget_head, pair_accuracy
        from sarm.reward.pooled import pooled_features

        data = self.trainer.datamodule
        if data.yields_tokens:
            raise SarmInputError("max_features refits on cached activations: use sarm.cache.PairActivationDataModule")
        network = self.network.cpu()  # full-batch fit on the CPU; the module goes back to its device below
        device, was_training = self.device, self.training
        chosen, rejected, margin = pooled_features(network, data, "train")
        diff = chosen - rejected
        chosen, rejected, _ = pooled_features(network, data, "val")
        if self.hparams.budget_l2 is None:
            l2, fit = best_budget_head(
                {"train": diff, "val": chosen - rejected}, self.hparams.max_features, margin=margin
            )
        else:
            l2, fit = (
                self.hparams.budget_l2,
                budget_head(diff, self.hparams.max_features, self.hparams.budget_l2, margin),
            )
        network.head.weight.data.copy_(fit.weight)
        val_accuracy = pair_accuracy(chosen - rejected, fit.weight)
        self.replace_val_metrics(torch.cat([chosen, rejected]) @ fit.weight, val_accuracy)
        self.train(was_training)
        self.to(device)
        print(
            f"sarm: head refit on {network.head.nonzero()} features (max_features {self.hparams.max_features}, "
            f"elimination λ {l2:g}): "
            f"val accuracy {val_accuracy:.4f}, gradient norm {fit.grad_norm:.1e} "
            f"({'converged' if fit.converged else 'NOT converged'})",
            flush=True,
        )

    def replace_val_metrics(self, rewards: torch.Tensor, accuracy: float, extra: dict | None = None) -> None:
        """After the head was replaced by a fit: ``rewards`` (both sides of every val pair) set ``reward_norm``, and
        the trainer's ``val/`` metrics, which describe the head replaced, give way to the fit's (exported)."""
        std = float(rewards.std()) if len(rewards) > 1 else 1.0
        self.reward_norm.copy_(torch.tensor([float(rewards.mean()) if len(rewards) else 0.0, std if std > 0 else 1.0]))
        metrics = self.trainer.callback_metrics
        for stale in [k for k in metrics if k.startswith("val/")]:
            del metrics[stale]
        metrics.update(
            {
                "val/accuracy": torch.tensor(accuracy),
                "val/reward_mean": self.reward_norm[0].clone(),
                "val/reward_std": self.reward_norm[1].clone(),
                **{k: torch.tensor(v) for k, v in (extra or {}).items()},
            }
        )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The step, then (joint mode) unit decoder rows, before any callback's ``on_train_batch_end``: a
        step checkpoint must hold the decoder the uninterrupted run goes on with (as in ``SAEModule``)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.hparams.mode == "joint":
            self.sae.normalize_decoder()
