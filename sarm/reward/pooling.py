"""Where a sequence's reward is read: its last response token, or the mean over its response tokens.

Both read a response mask ``[batch, seq]`` (1 on the final assistant response's tokens, 0 on the
prompt and on padding), so they are right under left or right padding alike: the last token is
the last position whose mask is 1, wherever the padding sits.

The per-token map (SAE features, or the standardized hidden state) is applied before pooling and
only to the tokens that are read: the last token alone, or the response tokens for the mean. A mean
of features keeps the reward an exact sum of per-feature terms: w · mean_t f(h_t) = Σ_i w_i mean_t f_i(h_t).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from sarm.sae.base import TopLatents, as_dense

Pooling = Literal["last", "mean"]


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """``[batch]`` index of each row's last position where ``mask`` is set."""
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)
    last = (mask.bool() * positions).amax(-1) - 1
    if (last < 0).any():
        raise ValueError("pooling: a sequence has no response token (its response mask is all zero)")
    return last


def pool(
    hidden: torch.Tensor, mask: torch.Tensor, how: Pooling, token_map: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``[batch, features]``: ``token_map`` of the last response token, or its mean over the response.

    Args:
        hidden: ``[batch, seq, d]`` hidden states.
        mask: ``[batch, seq]`` response mask.
        how: ``last`` or ``mean``.
        token_map: ``[n, d] -> [n, features]`` (or the ``TopLatents`` of a TopK SAE), applied to the
            tokens that are read only.
    """
    if how == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return as_dense(token_map(hidden[rows, last_positions(mask)]))
    if how != "mean":
        raise ValueError(f"pooling = {how!r}: expected 'last' or 'mean'")
    mask = mask.bool()
    rows, cols = mask.nonzero(as_tuple=True)
    values = token_map(hidden[rows, cols])
    if isinstance(values, TopLatents):  # sum the k kept values per token: no [tokens, n_latents] tensor
        summed = values.values.new_zeros(hidden.shape[0], values.n_latents).index_put(
            (rows[:, None].expand_as(values.indices), values.indices), values.values, accumulate=True
        )
    else:
        summed = values.new_zeros(hidden.shape[0], values.shape[-1]).index_add_(0, rows, values)
    counts = mask.sum(-1, keepdim=True)
    if (counts == 0).any():
        raise ValueError("pooling: a sequence has no response token (its response mask is all zero)")
    return summed / counts.to(summed.dtype)
