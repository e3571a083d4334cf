"""Per-pair feature contributions to a SARM's margin, their per-feature statistics, and the one ranking rule.

A SARM reward is r = Σ_i w_i z_i (no bias), so a pair's margin splits exactly into per-feature terms:

    margin = r_chosen − r_rejected = Σ_i c_i,        c_i = w_i z_i^chosen − w_i z_i^rejected

Over the P pairs of a dataset, per feature i (``FeatureAttributionSums``):

    mean_margin_contribution     m_i = (1/P) Σ_pairs c_i       signed: > 0 pushes toward the chosen response
    abs_mean_margin_contribution |m_i|                         the ranking key (``rank_features``)
    mean_chosen_contribution     (1/P) Σ_pairs w_i z_i^chosen
    mean_rejected_contribution   (1/P) Σ_pairs w_i z_i^rejected
    freq_chosen, freq_rejected   share of chosen / rejected responses where the feature is active
    sign_agreement               share of pairs where c_i has the margin's sign
    margin_share                 m_i / mean margin

Ranking rule (``RANKING``): features are ranked by |m_i|, the magnitude of their mean margin contribution, largest
first; the sign stays a column (``mean_margin_contribution``), never a second ranking.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

RANKING = "|mean margin contribution|"  # the rule's name, for docstrings, table headers and file metadata
RANK_COLUMN = "abs_mean_margin_contribution"  # its column in features.csv/json


def margin_contributions(head, z_chosen: torch.Tensor, z_rejected: torch.Tensor) -> torch.Tensor:
    """c_i = w_i z_i^chosen − w_i z_i^rejected, ``[P, n_features]``: each row sums to the pair's margin."""
    return head.contributions(z_chosen) - head.contributions(z_rejected)


def rank_features(mean_margin_contribution: torch.Tensor) -> torch.Tensor:
    """Feature indices ranked by |m_i| (``RANKING``), largest first; ties keep index order.

    Why the magnitude and not the signed mean: the tables answer "which features decide this model's
    preferences". A feature that steadily favours the rejected response (m_i < 0) decides as much as one
    that favours the chosen response, and it is the one that explains misranked pairs; ranked by the
    signed mean it would come last, below features that never fire. The sign is read from the
    ``mean_margin_contribution`` column.
    """
    return torch.sort(mean_margin_contribution.abs(), descending=True, stable=True).indices


def largest_terms(contributions: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's ``k`` largest |c_i|: features and their c_i, ``[P, k]`` each, largest first (a margin's
    waterfall). A pair with fewer than ``k`` non-zero terms gets zero terms at the end."""
    k = min(k, contributions.shape[-1])
    index = contributions.abs().topk(k, dim=-1).indices
    return index, contributions.gather(-1, index)


class FeatureAttributionSums(Metric):
    """Per-feature sums over pairs; ``compute`` turns them into the table's columns (module docstring).

    The states are reduced with ``sum`` across ranks, so a multi-process run gives the numbers of one process.
    """

    full_state_update = False

    def __init__(self, n_latents: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("chosen", "rejected", "active_chosen", "active_rejected", "agree"):
            self.add_state(name, torch.zeros(n_latents, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("pairs", "margin", "correct", "feature_abs", "residual_abs"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, contrib_chosen: torch.Tensor, contrib_rejected: torch.Tensor, residual: torch.Tensor | None = None
    ) -> None:
        """``residual``: ``[P]`` a residualized SARM's residual margin term b_p (``sarm.reward.residual``), the one
        part of each margin that is no feature's; the margin is then Σ_i c_i + b_p."""
        contrib_chosen, contrib_rejected = contrib_chosen.double(), contrib_rejected.double()
        diff = contrib_chosen - contrib_rejected
        features = diff.sum(-1)
        residual = torch.zeros_like(features) if residual is None else residual.double()
        margin = features + residual
        self.feature_abs = self.feature_abs + features.abs().sum()
        self.residual_abs = self.residual_abs + residual.abs().sum()
        # Out-of-place updates: under ddp_spawn the ranks share this buffer, and in-place updates count twice.
        self.chosen = self.chosen + contrib_chosen.sum(0)
        self.rejected = self.rejected + contrib_rejected.sum(0)
        self.active_chosen = self.active_chosen + (contrib_chosen != 0).sum(0)
        self.active_rejected = self.active_rejected + (contrib_rejected != 0).sum(0)
        self.agree = self.agree + (diff * margin.sign()[:, None] > 0).sum(0)
        self.pairs = self.pairs + diff.shape[0]
        self.margin = self.margin + margin.sum()
        self.correct = self.correct + (margin > 0).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        from sarm.reward.residual import feature_share

        n = self.pairs.clamp_min(1)
        mean_margin = (self.chosen - self.rejected) / n
        return {
            "mean_margin_contribution": mean_margin,
            RANK_COLUMN: mean_margin.abs(),
            "mean_chosen_contribution": self.chosen / n,
            "mean_rejected_contribution": self.rejected / n,
            "freq_chosen": self.active_chosen / n,
            "freq_rejected": self.active_rejected / n,
            "sign_agreement": self.agree / n,
            "margin_share": mean_margin / (self.margin / n),
            "pairs": self.pairs,
            "accuracy": self.correct / n,
            "mean_margin": self.margin / n,
            # Σ_p |a_p| / (Σ_p |a_p| + Σ_p |b_p|) from the summed parts: 1 without a residual
            "feature_share": torch.tensor(feature_share(self.feature_abs.reshape(1), self.residual_abs.reshape(1))),
        }
