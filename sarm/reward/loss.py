"""Bradley–Terry preference loss and the pairwise metrics reward models report."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """−log σ(r_chosen − r_rejected − margin), averaged over pairs (TRL's convention for ``margin``)."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()
