"""Feature drift: which features carry more of the reward on policy samples than on the reference data.

During RL a policy learns to exploit whatever its reward model over-rewards (length, formatting, flattery; Gao et al.,
*Scaling Laws for Reward Model Overoptimization*, 2023; Singhal et al., *A Long Way to Go: Investigating Length
Correlations in RLHF*, 2023). A SARM's reward is a sum of named feature terms, so the exploitation shows as a feature
whose share of reward rises. Per feature i, with share_i as ``sarm.attribution.shares`` defines it (Σ_s t_{s,i} /
Σ_s m_s over a set of responses):

    Δ_i = share_i(samples) − share_i(reference)

The uncertainty of Δ_i comes from a cluster bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993;
Field & Welsh, *Bootstrapping clustered data*, 2007): each of B replicates resamples the reference's prompts and the
samples' prompts with replacement, independently (two independent samples), every response of a drawn prompt coming
with it, and recomputes Δ_i from the resampled sums; se_i is the replicates' standard deviation. Prompts, not
responses, are the units: the responses to one prompt (a pair's two sides, a GRPO group's completions) share its
topic and move together, and resampling them one by one would understate the variance. The
interval is the normal one, Δ_i ± z · se_i, with z = Φ⁻¹(1 − α / K) for a one-sided test per feature at level α/K,
K the features tested (those with a non-zero term in either set; a feature that never fires cannot drift):
Bonferroni's correction, so the chance that *any* unchanged feature is flagged is at most α (approximately: the
normal interval is asymptotic; with B replicates se_i itself is estimated to about 1/√(2B) relative error). The
normal interval rather than bootstrap percentiles because the corrected level α/K (≈ 5·10⁻⁵ for 1,000 features) is
far in the tail, where percentiles of B = 1,000 replicates say nothing.

A feature is **flagged** when its share rose by more than the threshold τ with that confidence:

    flagged_i  ⇔  Δ_i − z · se_i > τ

τ (a fraction of the reward's absolute mass, default 0.01) says what rise matters; the test says it is not noise. A
feature whose lower bound is above τ rose by at least τ at simultaneous level α. ``fell`` marks the mirror case
(Δ_i + z · se_i < −τ), reported but not flagged: a falling share is the policy moving away from what the feature
rewards, or toward what it penalizes more, neither of which is exploitation.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch

from sarm.attribution.shares import absolute_mass, reward_shares


@dataclass
class Drift:
    """Per-feature drift of reward shares, ``[F]`` each (module docstring)."""

    reference: torch.Tensor  # share_i on the reference
    samples: torch.Tensor  # share_i on the samples
    delta: torch.Tensor  # Δ_i
    se: torch.Tensor  # bootstrap standard error of Δ_i
    lower: torch.Tensor  # Δ_i − z se_i
    upper: torch.Tensor  # Δ_i + z se_i
    tested: torch.Tensor  # bool: a non-zero term in either set
    flagged: torch.Tensor  # bool: lower > τ
    fell: torch.Tensor  # bool: upper < −τ
    z: float
    threshold: float
    alpha: float
    resamples: int


def bootstrap_shares(
    terms: torch.Tensor,
    mass: torch.Tensor,
    groups: torch.Tensor,
    resamples: int,
    generator: torch.Generator,
    chunk: int = 100,
) -> torch.Tensor:
    """``[B, F]`` shares of B cluster resamples of the n responses with terms ``[n, F]``, absolute masses ``[n]`` and
    prompt ids ``groups`` ``[n]`` (0..G−1): G prompts drawn with replacement, each replicate's share (w · t_i) / (w · m)
    with w_s the number of times response s's prompt was drawn."""
    n_groups = int(groups.max()) + 1
    out = []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        draws = torch.randint(n_groups, (b, n_groups), generator=generator)
        drawn = torch.zeros(b, n_groups, dtype=torch.float64)
        drawn.scatter_add_(1, draws, torch.ones(b, n_groups, dtype=torch.float64))
        counts = drawn[:, groups]  # [b, n]
        out.append((counts @ terms) / (counts @ mass).clamp_min(torch.finfo(torch.float64).tiny)[:, None])
    return torch.cat(out)


def group_ids(keys: list) -> torch.Tensor:
    """``[n]`` ids 0..G−1 of hashable keys (prompts), in order of first appearance."""
    index: dict = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)


def share_drift(
    reference_terms: torch.Tensor,
    sample_terms: torch.Tensor,
    reference_groups: torch.Tensor | None = None,
    sample_groups: torch.Tensor | None = None,
    reference_residual: torch.Tensor | None = None,
    sample_residual: torch.Tensor | None = None,
    threshold: float = 0.01,
    alpha: float = 0.05,
    resamples: int = 1000,
    seed: int = 0,
) -> Drift:
    """The drift of each feature's reward share from the reference's responses (feature terms ``[n_ref, F]``, their
    prompts' ids ``[n_ref]`` (``group_ids``; None: each response its own), and residual terms ``[n_ref]`` of a
    residualized SARM) to the samples' (``[n, F]``, ``[n]``, ``[n]``)."""
    reference_groups = torch.arange(len(reference_terms)) if reference_groups is None else reference_groups
    sample_groups = torch.arange(len(sample_terms)) if sample_groups is None else sample_groups
    for name, groups in (("reference", reference_groups), ("samples", sample_groups)):
        if len(groups) == 0 or int(groups.max()) < 1:
            raise ValueError(f"the {name} hold fewer than 2 prompts: a bootstrap needs at least 2 in each set")
    ref, new = reference_terms.double(), sample_terms.double()
    ref_mass = absolute_mass(ref, None if reference_residual is None else reference_residual.double())
    new_mass = absolute_mass(new, None if sample_residual is None else sample_residual.double())
    reference = reward_shares(ref, reference_residual)
    samples = reward_shares(new, sample_residual)
    delta = samples - reference
    generator = torch.Generator().manual_seed(seed)
    replicates = bootstrap_shares(new, new_mass, sample_groups, resamples, generator)
    replicates -= bootstrap_shares(ref, ref_mass, reference_groups, resamples, generator)
    se = replicates.std(0)
    tested = (ref != 0).any(0) | (new != 0).any(0)
    z = NormalDist().inv_cdf(1 - alpha / max(int(tested.sum()), 1))
    lower, upper = delta - z * se, delta + z * se
    return Drift(
        reference=reference,
        samples=samples,
        delta=delta,
        se=se,
        lower=lower,
        upper=upper,
        tested=tested,
        flagged=tested & (lower > threshold),
        fell=tested & (upper < -threshold),
        z=z,
        threshold=threshold,
        alpha=alpha,
        resamples=resamples,
    )
