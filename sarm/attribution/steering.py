"""Steering: change chosen features' activations before the head and see how rewards move.

A SARM reward is r = Σ_i w_i z_i, so an intervention on z is exact and cheap: the backbone and SAE
are not re-run. For features F,

    zero    z_i ← 0            (what if the feature never fired?)
    scale   z_i ← value · z_i
    add     z_i ← z_i + value  (on every response)

and a dataset is re-scored: accuracy and mean margin before and after. Zeroing needs not even z:
each margin loses exactly its features' terms, margin' = margin − Σ_{i∈F} c_i (``zeroing_effect``),
so an attribution directory's per-pair contributions (``sarm.attribution.store``) are enough.
"""

from __future__ import annotations

from typing import Literal

import torch

from sarm.reward.network import RewardNetwork

Operation = Literal["zero", "scale", "add"]


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
def steering_effect(
    network: RewardNetwork,
    z_chosen: torch.Tensor,
    z_rejected: torch.Tensor,
    features: list[int],
    operation: Operation = "zero",
    value: float = 0.0,
) -> dict[str, float]:
    """Accuracy and mean margin of the pairs before and after steering ``features``."""
    head = network.head
    before = head(z_chosen) - head(z_rejected)
    after = head(steer(z_chosen, features, operation, value)) - head(steer(z_rejected, features, operation, value))
    return _effect(before, after, features, operation, value)


def zeroing_effect(margin: torch.Tensor, contributions: torch.Tensor, features: list[int]) -> dict[str, float]:
    """``steering_effect`` of zeroing ``features``, from the margins ``[P]`` and those features' per-pair
    terms c_i ``[P, len(features)]``: margin' = margin − Σ c_i."""
    return _effect(margin, margin - contributions.sum(-1), features, "zero", 0.0)


def _effect(before: torch.Tensor, after: torch.Tensor, features: list[int], operation: str, value: float) -> dict:
    return {
        "features": list(features),
        "operation": operation,
        "value": value,
        "pairs": int(before.numel()),
        "accuracy_before": float((before > 0).float().mean()),
        "accuracy": float((after > 0).float().mean()),
        "mean_margin_before": float(before.mean()),
        "mean_margin": float(after.mean()),
    }
