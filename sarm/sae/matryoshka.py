"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, arXiv 2503.17547; Nabeshima 2024, "Matryoshka SAEs").

The dictionary is cut into nested prefixes, latents [0, m_1) ⊂ [0, m_2) ⊂ … ⊂ [0, m_L = n_latents), and each
prefix must reconstruct the input on its own:

    x̂_{≤m} = f_{[0, m)} @ W_dec[0:m] + b_dec        (the same BatchTopK latents f, truncated)
    L_rec  = Σ_{l=1..L} FVU(x, x̂_{≤m_l})              (the last term is the ordinary reconstruction)

A general feature that a wider SAE would split into specific latents ("starts with S" absorbed into "snake",
"sun", …) must sit in an early prefix, which sees no specific latents to absorb it into; that is the claimed
reduction of feature absorption. Inference is BatchTopK's (one threshold, ``BatchTopKSAE``), so the SAE exports
as SAELens's ``jumprelu`` with the prefix ends under ``metadata.training_architecture_details.matryoshka_widths``,
where SAELens's own Matryoshka runs record them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sarm.sae.topk import BatchTopKSAE


def prefix_widths(n_latents: int, widths: list[int] | None = None, levels: int = 4) -> list[int]:
    """The prefix ends m_1 < … < m_L = n_latents: ``widths`` as given (checked), or ``levels`` ends that double,
    n/2^(L−1), …, n/2, n (Bussmann et al.'s geometric spacing)."""
    if widths is None:
        widths = [n_latents >> (levels - 1 - level) for level in range(levels)]
    widths = [int(width) for width in widths]
    if widths[-1] != n_latents or any(b <= a for a, b in zip(widths, widths[1:])) or widths[0] < 1:
        raise ValueError(f"matryoshka widths {widths} must rise strictly from ≥ 1 and end at n_latents = {n_latents}")
    return widths


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """A BatchTopK SAE whose nested prefixes (``widths``, prefix ends) are each trained to reconstruct the input.

    Args:
        d_in, n_latents, k, input_norm, threshold_momentum: as for ``BatchTopKSAE``.
        widths: prefix ends m_1 < … < m_L = n_latents; default: 4 doubling levels (``prefix_widths``).
    """

    architecture = "matryoshka_batchtopk"

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        k: int,
        input_norm: str = "standardize",
        widths: list[int] | None = None,
        threshold_momentum: float = 0.01,
    ):
        super().__init__(d_in, n_latents, k, input_norm, threshold_momentum)
        self.widths = prefix_widths(n_latents, widths)

    def prefix_reconstructions(self, latents: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(m, x̂_{≤m}) for every prefix end m, by running sums: each level adds its own slice of the decoder."""
        x_hat, start = self.b_dec, 0
        for width in self.widths:
            x_hat = x_hat + latents[..., start:width] @ self.W_dec[start:width]
            start = width
            yield width, x_hat

    def config(self) -> dict:
        return {**super().config(), "matryoshka_widths": list(self.widths)}
