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
from sarm.reward.fit import SPLITS, best_l2_fit, fit_head, pair_accuracy
from sarm.reward.pooled import pooled_features

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


def legibility_curve(
    network, data, split: str = "test", ms: Sequence[int | str] = MS, dense: bool = True
) -> dict | None:
    """The legibility of a SARM on one split of a cache, as ``sarm attribute``, ``sarm test`` and the report show it.

    Args:
        network: a ``SARMNetwork`` (its head ranks and weighs the features; its pooling pools them).
        data: a ``sarm.cache.PairActivationDataModule`` over the cache (pooled by the network's pooling).
        split: the split scored (``val`` or ``test``); the ranking and every refit read the train split only.
        ms: the curve's m's.
        dense: also fit the dense baseline on the same pooling: the converged ``best_l2_fit`` on the standardized
            pooled hidden states (λ chosen on val), scored on ``split`` (the line the curve is read against).

    Returns ``{"split", "pairs", "n_features", "ms", "accuracy": {m: a}, "refit_accuracy": {m: a},
    "share": {m: share_m}}`` (the module docstring's quantities; "share" for numeric m only, "all" being 1 by
    definition) plus, with ``dense``,
    ``"dense_accuracy"`` and ``"dense_l2"``; None when the train split or ``split`` holds no pairs (nothing to rank
    on or nothing to score).
    """
    from sarm.reward.network import DenseNetwork

    counts = data.cache.manifest["split_pairs"]
    if split == "train" or not counts.get("train") or not counts.get(split):
        return None

    def differences(net, name: str) -> torch.Tensor:
        chosen, rejected, _ = pooled_features(net, data, name)
        return chosen - rejected

    train, scored = differences(network, "train"), differences(network, split)
    weight = network.head.weight.detach().cpu()
    curve = {
        "split": split,
        "pairs": len(scored),
        "n_features": weight.numel(),
        "ms": [str(m) for m in ms],
        "accuracy": top_m_accuracy(train, scored, weight, ms),
        "refit_accuracy": top_m_accuracy(train, scored, weight, ms, refit=True),
        "share": {str(m): per_pair_share(scored * weight, int(m)) for m in ms if m != "all"},
    }
    if dense and counts.get("val"):
        baseline = DenseNetwork(data.hidden_size, network.pooling)
        diffs = {name: differences(baseline, name) for name in {*SPLITS[:2], split}}
        l2, fit = best_l2_fit(diffs)
        curve |= {"dense_accuracy": pair_accuracy(diffs[split], fit.weight), "dense_l2": l2}
    return curve


def describe(curve: dict) -> str:
    """One line per row of the curve, for a command's output."""
    ms = curve["ms"]
    head = f"{'m':>16}" + "".join(f"{m:>7}" for m in ms)
    rows = [
        f"{'keep top-m':>16}" + "".join(f"{curve['accuracy'][m]:>7.3f}" for m in ms),
        f"{'refit top-m':>16}" + "".join(f"{curve['refit_accuracy'][m]:>7.3f}" for m in ms),
        f"{'per-pair share':>16}"
        + "".join(f"{curve['share'][m]:>7.3f}" if m in curve["share"] else f"{'':>7}" for m in ms),
    ]
    dense = ""
    if "dense_accuracy" in curve:
        dense = f"; dense head (same pooling, converged, λ {curve['dense_l2']:g}) {curve['dense_accuracy']:.3f}"
    return (
        f"legibility on the {curve['split']} split ({curve['pairs']} pairs; ranking and refits on train){dense}\n"
        + "\n".join([head, *rows])
    )
