"""Pairwise metrics that stay correct across ranks: reward statistics and per-subset accuracy."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class RewardStats(Metric):
    """Mean, std, min and max of rewards (sums and extrema are reduced across ranks, then combined)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("low", torch.tensor(float("inf"), dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("high", torch.tensor(float("-inf"), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, rewards: torch.Tensor) -> None:
        r = rewards.detach().double().flatten()
        # Out-of-place updates: under ddp_spawn, states may share memory across ranks.
        self.total = self.total + r.sum()
        self.total_sq = self.total_sq + r.pow(2).sum()
        self.count = self.count + r.numel()
        self.low = torch.minimum(self.low, r.min())
        self.high = torch.maximum(self.high, r.max())

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.count
        std = (self.total_sq / self.count - mean.pow(2)).clamp_min(0).sqrt()
        return {
            "reward_mean": mean.float(),
            "reward_std": std.float(),
            "reward_min": self.low.float(),
            "reward_max": self.high.float(),
        }


class SubsetAccuracy(Metric):
    """Pairwise accuracy per subset (RewardBench style), from per-pair correctness and subset ids."""

    full_state_update = False

    def __init__(self, subsets: list[str], **kwargs):
        super().__init__(**kwargs)
        self.subsets = list(subsets)
        self.add_state("correct", torch.zeros(len(subsets), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(subsets), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor, subset: torch.Tensor) -> None:
        keep = subset >= 0  # -1: a pair without a subset label
        self.correct = self.correct.index_add(0, subset[keep], correct[keep].double())
        self.count = self.count.index_add(0, subset[keep], torch.ones_like(correct[keep], dtype=torch.float64))

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.count > 0
        accuracy = self.correct / self.count.clamp_min(1)
        out = {name: accuracy[i].float() for i, name in enumerate(self.subsets) if seen[i]}
        if seen.any():
            out["subset_mean"] = accuracy[seen].mean().float()
        return out
