"""The share of reward each feature carries over a set of responses: the one definition, used by the TRL reward
function's logging (``sarm.rl.reward_function``) and by the feature-drift monitor (``sarm.rl.drift``).

A SARM reward is a sum of feature terms, r_s = Σ_j t_{s,j} (+ b_s for a residualized SARM), t_{s,j} = w_j z_{s,j}.
Over responses s = 1..n, feature i's share is its summed signed term over the summed absolute mass of the rewards:

    share_i = Σ_s t_{s,i} / Σ_s m_s,        m_s = Σ_j |t_{s,j}| + |b_s|

Why this form:

* signed numerator: a feature the policy exploits pushes rewards *up*, so its share rises; one whose negative
  term grows (the RM penalizing more of it) falls. Drift upward is what reward hacking looks like (Gao et al.,
  *Scaling Laws for Reward Model Overoptimization*, 2023).
* absolute-mass denominator: shares are scale-free (a policy whose rewards double everywhere leaves them as they
  were), cannot blow up when positive and negative terms cancel (a mean reward near zero would), and
  Σ_i |share_i| ≤ 1, so a share reads as "this fraction of the reward's mass".
* ratio of sums, not mean of per-response ratios: a response with almost no mass cannot carry a large weight,
  and the bootstrap of ``sarm.rl.drift`` resamples responses, with weights, in the same two sums.

The residual of a residualized SARM is in every m_s and has a share of its own, Σ_s b_s / Σ_s m_s.
"""

from __future__ import annotations

import torch


def absolute_mass(terms: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """m_s = Σ_j |t_{s,j}| + |b_s| of each response, ``[n]``, from its feature terms ``[n, F]`` (and residuals)."""
    mass = terms.abs().sum(-1)
    return mass if residual is None else mass + residual.abs()


def reward_shares(terms: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """share_i = Σ_s t_{s,i} / Σ_s m_s of feature terms ``[n, F]`` (module docstring), ``[F]``; all zero when no
    response has any mass (no feature fired anywhere)."""
    terms = terms.double()
    mass = absolute_mass(terms, None if residual is None else residual.double()).sum()
    return terms.sum(0) / mass if mass > 0 else torch.zeros(terms.shape[-1], dtype=torch.float64)


def residual_share(terms: torch.Tensor, residual: torch.Tensor) -> float:
    """The residual's share, Σ_s b_s / Σ_s m_s (0 when there is no mass)."""
    mass = float(absolute_mass(terms.double(), residual.double()).sum())
    return float(residual.double().sum()) / mass if mass > 0 else 0.0
