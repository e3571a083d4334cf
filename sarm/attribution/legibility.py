"""Legibility as a measurement: how few features carry a reward model's decisions.

A SARM margin is an exact sum Σ_i c_i over features (``sarm.attribution.contributions``), c_i = w_i d_i with
d = z^chosen − z^rejected. Two numbers say whether a person can read that sum:

    top-m accuracy     keep only the global top-m features, S_m = the first m of ``rank_features`` of the mean
                       margin contributions on the TRAIN split (m_i = (1/P_train) Σ_p w_i d_{p,i}), and score the
                       test pairs by Σ_{i ∈ S_m} w_i d_i (no refit), or by a head refit on S_m alone on the train
                       split (``refit``: ``sarm.reward.fit.fit_head`` with support S_m). Accuracy = share of test
                       pairs whose kept margin is > 0. The ranking never reads the test split.
    per-pair share     share_m = (1/P) Σ_p  Σ_{i ∈ top_m(p)} |c_{p,i}| / Σ_i |c_{p,i}|, where top_m(p) are the m
                       largest |c_{p,i}| of pair p itself (``largest_terms``): how much of the sum that builds a
                       pair's margin its own m largest terms carry. A pair with Σ_i |c_{p,i}| = 0 (no feature
                       separates its two sides; margin exactly 0) counts as share 1: keeping m terms loses nothing
                       of its (empty) sum, and dropping it would make the mean depend on how many such pairs a
                       split has. 1 means every pair is read in full from m terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sarm.attribution.contributions import rank_features
from sarm.reward.fit import fit_head, pair_accuracy

MS = (5, 10, 20, 50, 100, "all")  # the curve's m's; "all" = every feature


def train_ranking(diff_train: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Features ranked on the train split by the one rule (``rank_features`` of m_i = mean_p w_i d_{p,i})."""
    return rank_features((diff_train.double() * weight.double()).mean(0))


def top_m_accuracy(
    diff_train: torch.Tensor,
    diff_test: torch.Tensor,
    weight: torch.Tensor,
    ms: Sequence[int | str] = MS,
    refit: bool = False,
    l2: float = 0.0,
) -> dict[str, float]:
    """Test accuracy with only the train split's top-m features, for each m in ``ms`` (module docstring).

    Args:
        diff_train, diff_test: ``[P, n]`` pair differences z^chosen − z^rejected of the train and test splits.
        weight: ``[n]`` the head whose contributions rank the features (on ``diff_train`` only).
        ms: how many features to keep; ``"all"`` (or any m ≥ n) keeps them all.
        refit: score with a head refit on the kept features alone (train split), not the head's own weights.
        l2: the refit's L2 penalty.

    Returns ``{str(m): accuracy}``.
    """
    order = train_ranking(diff_train, weight)
    n = weight.numel()
    out = {}
    for m in ms:
        keep = order[: n if m == "all" else int(m)]
        if refit:
            kept = fit_head(diff_train, l2=l2, support=keep).weight
        else:
            kept = torch.zeros_like(weight)
            kept[keep] = weight[keep]
        out[str(m)] = pair_accuracy(diff_test, kept)
    return out


def pair_shares(contributions: torch.Tensor, ms: Sequence[int]) -> torch.Tensor:
    """``[P, len(ms)]``: each pair's Σ_{top-m |c| of the pair} |c| / Σ |c| (0/0 → 1) for every m of ``ms``, the
    terms of share_m. One sort per pair serves every m (the largest |c| once, then their running sums)."""
    magnitude = contributions.double().abs()
    k = min(max(ms), magnitude.shape[-1])
    kept = magnitude.topk(k, dim=-1).values.cumsum(-1)[:, [min(m, k) - 1 for m in ms]]
    total = magnitude.sum(-1, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(torch.float64).tiny), 1.0)


def per_pair_share(contributions: torch.Tensor, m: int) -> float:
    """share_m of the module docstring: the mean of ``pair_shares`` over pairs."""
    return float(pair_shares(contributions, [m]).mean())
