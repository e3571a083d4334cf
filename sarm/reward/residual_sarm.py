"""``ResidualSARM``: the residualized SARM (``sarm.reward.residual``) as a LightningModule, so that ``sarm fit``,
``sarm test``, ``sarm attribute`` and ``sarm report`` handle it like any reward model.

    reward = Σ_{i∈S} w_i z_i + v · h̃        |S| ≤ max_features, v a small dense residual on the same pooling

Training: both parts are convex full-batch fits on the train split, made at the end of ``sarm fit``
(``sarm.reward.residual.fit_residual``; μ chosen on val by ``select_residual_l2`` unless given). The trainer's
epochs before it train the plain SARM head that validation shows while they run; the export keeps only the end
fit, so one epoch is enough (``configs/demo/residual.yaml``). Head mode on cached activations only.

Testing (``init_from`` an exported residualized SARM): accuracy of the full reward, and ``test/feature_share``, the
share of the test pairs' absolute margin carried by the features (``feature_share``).
"""

from __future__ import annotations

import torch
from torchmetrics import SumMetric

from sarm.errors import SarmInputError
from sarm.reward.fit import best_l2_fit, pair_accuracy
from sarm.reward.network import DenseNetwork
from sarm.reward.pooled import pooled_features
from sarm.reward.residual import ResidualSARMNetwork, feature_share, fit_residual, select_residual_l2
from sarm.reward.sarm import SARM


class ResidualSARM(SARM):
    """A few-feature SARM head plus a penalized dense residual (``sarm.reward.residual``).

    Args:
        max_features: m, the most features the interpretable part reads (``budget_head``).
        residual_l2: μ, the residual's L2 penalty; None: chosen on val (``select_residual_l2``): among the μ whose
            val feature share is ≥ ``min_share``, the largest whose val accuracy reaches the converged dense head's.
        min_share: the val feature-share floor of that choice.
        **kwargs: ``SARM``'s arguments (``sae`` or ``init_from``, ``pooling``, ``features``, ``export_dir``, ...).
    """

    kind = "residual_sarm"

    def __init__(self, max_features: int = 50, residual_l2: float | None = None, min_share: float = 0.8, **kwargs):
        super().__init__(max_features=max_features, **kwargs)
        self.save_hyperparameters()
        if residual_l2 is not None and residual_l2 < 0:
            raise SarmInputError(f"residual_l2 = {residual_l2}: expected a penalty >= 0 (or unset: chosen on val)")
        self.feature_share: float | None = None  # the val feature share of the fit, once made
        # Σ_p |a_p| and Σ_p |b_p| of the test pairs (summed across ranks): test/feature_share
        self.margin_parts = torch.nn.ModuleDict({"features": SumMetric(), "residual": SumMetric()})

    @property
    def residualized(self) -> bool:
        return isinstance(self.network, ResidualSARMNetwork)

    @property
    def head(self):
        """The features' head: what attribution splits into per-feature terms (the residual is one more term)."""
        return self.network.feature_head

    @property
    def features_frozen(self) -> bool:
        """A residualized network's reward reads the dense residual's hidden states too: it is not served pooled
        SAE features alone (``RewardModelModule.serve_pooled_features``)."""
        return not self.residualized and super().features_frozen

    def configure_optimizers(self):
        if self.residualized:
            raise SarmInputError(
                f"init_from = {self.hparams.init_from} is a fitted residualized SARM: test, score or attribute it; "
                "to fit one again, start from its SAE (sae = <dir>/sae)"
            )
        return super().configure_optimizers()

    def score(self, batch: dict) -> dict:
        if not self.residualized:
            return super().score(batch)
        hidden, mask = self.hidden_states(batch)
        z, residual = self.network.parts(hidden, mask)
        return self.scored(batch, hidden, mask, self.network.reward(z, residual), z=z, residual=residual)

    @staticmethod
    def _public(scored: dict) -> dict:
        public = SARM._public(scored)
        return public | {k: scored[k] for k in ("residual_chosen", "residual_rejected") if k in scored}

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        out = super().test_step(batch, batch_idx)
        if self.residualized:
            head = self.head
            features = head.contributions(out["z_chosen"]).sum(-1) - head.contributions(out["z_rejected"]).sum(-1)
            self.margin_parts["features"].update(features.abs())
            self.margin_parts["residual"].update((out["residual_chosen"] - out["residual_rejected"]).abs())
        return out

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.residualized and self.margin_parts["features"].update_count:
            a, b = (self.margin_parts[k].compute().reshape(1) for k in ("features", "residual"))
            self.log("test/feature_share", feature_share(a, b))
            for metric in self.margin_parts.values():
                metric.reset()

    def log_legibility(self) -> None:
        if not self.residualized:  # the top-m curve keeps or refits features alone; the residual has no place in it
            super().log_legibility()

    def on_train_end(self) -> None:
        self.fit_residual_head()
        super(SARM, self).on_train_end()  # exports the residualized network

    def export_options(self) -> dict:
        return {"feature_share": self.feature_share}

    def fit_residual_head(self) -> None:
        """Replace the trained SARM by the residualized fit on the train split (module docstring); its val rewards
        set the export's ``reward_norm``, and its val accuracy and feature share the export's ``val/`` metrics."""
        data = self.trainer.datamodule
        if data.yields_tokens:
            raise SarmInputError("ResidualSARM fits on cached activations: use sarm.cache.PairActivationDataModule")
        h = self.hparams
        device, was_training = self.device, self.training
        network = self.network.cpu()
        dense = DenseNetwork(network.input_size(), network.pooling)
        z, x = {}, {}
        for split in ("train", "val"):
            chosen, rejected, _ = pooled_features(network, data, split)
            z[split] = chosen - rejected
            dense_chosen, dense_rejected, _ = pooled_features(dense, data, split)
            x[split] = dense_chosen - dense_rejected
            if split == "val":  # both sides of every val pair, for the export's reward_norm
                val_sides = (torch.cat([chosen, rejected]), torch.cat([dense_chosen, dense_rejected]))
        if h.residual_l2 is None:
            _, dense_fit = best_l2_fit(x)
            target = pair_accuracy(x["val"], dense_fit.weight)
            fit, _ = select_residual_l2(z, x, h.max_features, target_accuracy=target, min_share=h.min_share)
        else:
            fit = fit_residual(z["train"], x["train"], h.max_features, h.residual_l2)
        self.network = ResidualSARMNetwork.from_fit(network, fit)
        self.feature_share = fit.share(z["val"], x["val"])
        val_rewards = val_sides[0] @ fit.feature.weight + val_sides[1] @ fit.residual.weight
        self.replace_val_metrics(
            val_rewards, fit.accuracy(z["val"], x["val"]), {"val/feature_share": self.feature_share}
        )
        self.train(was_training)
        self.to(device)
        print(
            f"sarm: residualized head: {network.head.nonzero()} features (max_features {h.max_features}) + a dense "
            f"residual, μ = {fit.residual_l2:g}: val accuracy {fit.accuracy(z['val'], x['val']):.4f}, "
            f"val feature share {self.feature_share:.3f}",
            flush=True,
        )
