"""Steering: change chosen features' activations before the head and see how rewards move.

A SARM reward is r = Σ_i w_i z_i, so an intervention on z is exact and cheap: the backbone and SAE
are not re-run. For features F,

    zero    z_i ← 0            (what if the feature never fired?)
    scale   z_i ← value · z_i
    add     z_i ← z_i + value  (on every response)

and a dataset is re-scored: accuracy and mean margin before and after.
"""

from __future__ import annotations

from typing import Literal

import torch

from sarm.reward.network import RewardNetwork

Operation = Literal["zero", "scale", "add"]


@torch.no_grad()
def collect_pair_features(network: RewardNetwork, loader) -> dict[str, torch.Tensor]:
    """``z_chosen``, ``z_rejected`` ``[P, n_features]``, ``pair`` and ``subset`` of every pair a
    cached-activation loader (``PairActivationDataModule``) yields."""
    parts: dict[str, list[torch.Tensor]] = {"z_chosen": [], "z_rejected": [], "pair": [], "subset": []}
    for batch in loader:
        z = network.features(batch["hidden"].float(), batch["mask"])
        n = z.shape[0] // 2
        parts["z_chosen"].append(z[:n])
        parts["z_rejected"].append(z[n:])
        parts["pair"].append(batch["pair"])
        parts["subset"].append(batch["subset"])
    return {k: torch.cat(v) for k, v in parts.items()}


def steer(z: torch.Tensor, features: list[int], operation: Operation = "zero", value: float = 0.0) -> torch.Tensor:
    """A copy of ``z`` with the intervention applied to ``features``."""
    out = z.clone()
    if operation == "zero":
        out[..., features] = 0.0
    elif operation == "scale":
        out[..., features] *= value
    elif operation == "add":
        out[..., features] += value
    else:
        raise ValueError(f"operation = {operation!r}: expected 'zero', 'scale' or 'add'")
    return out


@torch.no_grad()
def steering_effect(network: RewardNetwork, z_chosen: torch.Tensor, z_rejected: torch.Tensor, features: list[int],
                    operation: Operation = "zero", value: float = 0.0) -> dict[str, float]:
    """Accuracy and mean margin of the pairs before and after steering ``features``."""
    head = network.head
    before = head(z_chosen) - head(z_rejected)
    after = head(steer(z_chosen, features, operation, value)) - head(steer(z_rejected, features, operation, value))
    return {"features": list(features), "operation": operation, "value": value, "pairs": int(before.numel()),
            "accuracy_before": float((before > 0).float().mean()), "accuracy": float((after > 0).float().mean()),
            "mean_margin_before": float(before.mean()), "mean_margin": float(after.mean())}
