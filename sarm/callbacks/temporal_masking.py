"""Adaptive temporal masking (ATM, arXiv 2510.08855) of an SAE's latents during training.

The paper gives no code; these are our formulas. Every constant is an argument of
``AdaptiveTemporalMasking``.

Statistics. At every training step, from the step's latents f (tokens t, latents i) and the decoder
row norms r_i = ‖W_dec,i‖, per latent:

    a_i = mean_t f_ti                 mean activation
    q_i = mean_t 1[f_ti > 0]          firing frequency
    c_i = mean_t |f_ti| · r_i         mean norm of its reconstruction term f_ti · W_dec,i

(averaged across ranks), and exponential moving averages with decay β (``beta``):

    A_i ← β A_i + (1 − β) a_i,   Q_i ← β Q_i + (1 − β) q_i,   C_i ← β C_i + (1 − β) c_i

The first step sets A, Q, C to its values. A latent masked during the step is not updated: it could
not fire, and letting its averages decay would make masking self-perpetuating.

Importance. Three signals, each divided by its mean over latents so they are unit-free:

    magnitude     m_i = A_i / Q_i   (how strongly it fires when it fires; 0 if it never fired)
    frequency     Q_i               (how often it fires)
    contribution  C_i               (how much of the reconstruction it carries, ≈ Q_i · m_i · r_i)

    s_i = (w_m · m_i / m̄ + w_q · Q_i / Q̄ + w_c · C_i / C̄) / (w_m + w_q + w_c)     (x̄: mean over latents)

Masking. After ``warmup_steps``, every ``update_every`` steps, on log scores
ℓ_i = log(s_i + 10⁻³ · mean(s)) (the offset gives latents that never fired a finite, lowest value):

    τ   = mean(ℓ) − k · std(ℓ)                                       k = ``threshold_stds``
    P_i = clamp(slope · (τ − ℓ_i) / (std(ℓ) + ε), 0, max_prob)
                                         slope = ``prob_slope``, max_prob = ``max_mask_prob``, ε = ``eps``

so P_i is 0 at or above τ and grows linearly as ℓ_i falls below it. The statistics are taken in log
space because the scores are positive ratios with a long upper tail: on real activations
(SmolLM2 layer 15, 2,048 latents) mean(s) − std(s) fell below the smallest score, so a threshold on
the raw scores never masked anything. Each latent is masked
independently with probability P_i (uniform draws from a generator seeded with seed + global_step,
the same on every rank); if more than ⌊``max_masked_fraction`` · n⌋ are drawn, only the
lowest-scoring of them stay masked. The mask is written to ``pl_module.sae.latent_mask``
(True = kept; a masked latent's pre-activation is −inf, so it neither fires nor takes a TopK slot)
and held until the next update. Steps are optimizer steps (``trainer.global_step``) and the mask is
drawn in ``on_train_batch_start``, so a resumed run draws the same masks. Latents that never fire
score lowest and are masked first: harmless, but they use up part of the ``max_masked_fraction`` cap.

The mask is a training device, not part of the model: it is lifted for validation (all True from
``on_validation_start``, the training mask put back at ``on_validation_end``) and removed at
``on_train_end``, so the SAE that is saved and evaluated is whole.
"""

from __future__ import annotations

import lightning as L
import torch

from sarm.sae.base import as_dense


def latent_statistics(latents: torch.Tensor, decoder_norms: torch.Tensor) -> torch.Tensor:
    """One step's per-latent statistics, stacked ``[3, n]``: mean activation, frequency, contribution."""
    f = latents.detach().reshape(-1, latents.shape[-1]).float()
    mean_activation = f.mean(0)
    frequency = (f > 0).float().mean(0)
    contribution = f.abs().mean(0) * decoder_norms.float()
    return torch.stack([mean_activation, frequency, contribution])


def importance_scores(
    magnitude: torch.Tensor,
    frequency: torch.Tensor,
    contribution: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    eps: float = 1e-8,
) -> torch.Tensor:
    """s_i: weighted mean of the three signals, each divided by its mean over latents."""
    signals = torch.stack([magnitude, frequency, contribution]).float()
    normalized = signals / (signals.mean(1, keepdim=True) + eps)
    w = torch.tensor(weights, dtype=normalized.dtype, device=normalized.device)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"importance weights {weights} must be non-negative with a positive sum")
    return (w[:, None] * normalized).sum(0) / w.sum()


def masking_probabilities(
    scores: torch.Tensor, k: float = 1.0, slope: float = 0.5, max_prob: float = 0.5, eps: float = 1e-8
) -> torch.Tensor:
    """P_i = clamp(slope · (τ − ℓ_i) / (σ + eps), 0, max_prob) on log scores ℓ_i = log(s_i + 10⁻³ · mean(s)),
    with τ = μ − k · σ (μ, σ: mean and population std of ℓ)."""
    logs = (scores + 1e-3 * scores.mean().clamp_min(eps)).log()
    std = logs.std(unbiased=False)
    threshold = logs.mean() - k * std
    return (slope * (threshold - logs) / (std + eps)).clamp(0.0, max_prob)


def sample_mask(
    probabilities: torch.Tensor,
    scores: torch.Tensor,
    generator: torch.Generator,
    max_masked_fraction: float = 0.1,
) -> torch.Tensor:
    """A keep-mask (True = kept): latent i is masked with probability P_i, at most
    ⌊max_masked_fraction · n⌋ masked (the lowest-scoring of those drawn)."""
    n = probabilities.numel()
    draws = torch.rand(n, generator=generator, device=generator.device)
    masked = draws.to(probabilities.device) < probabilities
    max_masked = int(max_masked_fraction * n)
    if int(masked.sum()) > max_masked:
        candidates = torch.where(masked, scores, torch.full_like(scores, float("inf")))
        lowest = candidates.topk(max_masked, largest=False).indices
        masked = torch.zeros_like(masked)
        masked[lowest] = True
    return ~masked


class AdaptiveTemporalMasking(L.Callback):
    """Masks low-importance latents at random during training, with probabilities from EMA importance scores.

    Formulas in the module docstring. The module must expose ``sae`` (a ``SparseAutoencoder`` with
    a ``latent_mask`` buffer and ``W_dec``) and return ``{"loss", "latents", ...}`` (latents dense or as
    ``TopLatents``) from
    ``training_step``.

    Args:
        beta: EMA decay of the per-latent statistics (horizon ≈ 1 / (1 − beta) steps).
        warmup_steps: no masking before this optimizer step, while the statistics settle.
        update_every: the mask is resampled every this many steps after warm-up, and held in between.
        threshold_stds: k in τ = mean(s) − k · std(s); latents scoring at or above τ are never masked.
        prob_slope: masking probability per standard deviation below τ.
        max_mask_prob: cap on any latent's masking probability.
        max_masked_fraction: cap on the share of latents masked at once.
        magnitude_weight: weight w_m of the magnitude signal in the score.
        frequency_weight: weight w_q of the frequency signal.
        contribution_weight: weight w_c of the contribution signal.
        seed: base seed of the mask draws (seed + global_step, identical on every rank).
        eps: guards divisions by means and standard deviations.
    """

    def __init__(
        self,
        beta: float = 0.99,
        warmup_steps: int = 1000,
        update_every: int = 10,
        threshold_stds: float = 1.0,
        prob_slope: float = 0.5,
        max_mask_prob: float = 0.5,
        max_masked_fraction: float = 0.1,
        magnitude_weight: float = 1.0,
        frequency_weight: float = 1.0,
        contribution_weight: float = 1.0,
        seed: int = 0,
        eps: float = 1e-8,
    ):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta = {beta}: expected 0 <= beta < 1")
        if update_every < 1 or warmup_steps < 0:
            raise ValueError("update_every must be >= 1 and warmup_steps >= 0")
        if not 0.0 <= max_mask_prob <= 1.0 or not 0.0 <= max_masked_fraction <= 1.0:
            raise ValueError("max_mask_prob and max_masked_fraction must be in [0, 1]")
        self.beta, self.warmup_steps, self.update_every = beta, warmup_steps, update_every
        self.threshold_stds, self.prob_slope, self.max_mask_prob = threshold_stds, prob_slope, max_mask_prob
        self.max_masked_fraction = max_masked_fraction
        self.weights = (magnitude_weight, frequency_weight, contribution_weight)
        self.seed, self.eps = seed, eps

        # EMAs, created on the latents' device at the first step.
        self.mean_activation: torch.Tensor | None = None
        self.frequency: torch.Tensor | None = None
        self.contribution: torch.Tensor | None = None
        self.steps = 0  # EMA updates so far (training batches)
        self.last_mask_step = -1  # global step of the last resampling (guards gradient accumulation)
        self.mask: torch.Tensor | None = None  # the training mask, True = kept
        self._mask_during_validation: torch.Tensor | None = None

    # -- statistics -----------------------------------------------------------------------------

    @property
    def magnitude(self) -> torch.Tensor:
        """Mean activation when firing: A / Q (0 where Q = 0)."""
        return torch.where(
            self.frequency > 0,
            self.mean_activation / self.frequency.clamp_min(self.eps),
            torch.zeros_like(self.mean_activation),
        )

    def scores(self) -> torch.Tensor:
        return importance_scores(self.magnitude, self.frequency, self.contribution, self.weights, self.eps)

    def update_statistics(self, stats: torch.Tensor, kept: torch.Tensor) -> None:
        """EMA step with a ``[3, n]`` batch of statistics; latents where ``kept`` is False keep their values."""
        if self.mean_activation is None:
            self.mean_activation, self.frequency, self.contribution = stats.clone()
        else:
            emas = torch.stack([self.mean_activation, self.frequency, self.contribution]).to(stats.device)
            updated = torch.where(kept.to(stats.device), self.beta * emas + (1 - self.beta) * stats, emas)
            self.mean_activation, self.frequency, self.contribution = updated
        self.steps += 1

    def resample_mask(self, global_step: int) -> torch.Tensor:
        scores = self.scores()
        probabilities = masking_probabilities(
            scores, self.threshold_stds, self.prob_slope, self.max_mask_prob, self.eps
        )
        generator = torch.Generator().manual_seed(self.seed + global_step)  # CPU: same draws on any device
        return sample_mask(probabilities, scores, generator, self.max_masked_fraction)

    # -- hooks ----------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        if self.mask is not None:  # resumed: the checkpoint may hold the mask lifted for validation
            pl_module.sae.latent_mask.copy_(self.mask.to(pl_module.sae.latent_mask.device))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        due = step >= self.warmup_steps and (step - self.warmup_steps) % self.update_every == 0
        if not due or step == self.last_mask_step or self.mean_activation is None:
            return
        self.mask = self.resample_mask(step)
        pl_module.sae.latent_mask.copy_(self.mask.to(pl_module.sae.latent_mask.device))
        self.last_mask_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None:  # training_step skipped this batch
            return
        if not isinstance(outputs, dict) or "latents" not in outputs:
            raise TypeError("AdaptiveTemporalMasking needs training_step to return a dict with 'latents'")
        sae = pl_module.sae
        with torch.no_grad():
            stats = latent_statistics(as_dense(outputs["latents"]), sae.W_dec.detach().norm(dim=1))
            # Every rank must hold the same EMAs to draw the same mask: average the step's statistics.
            stats = trainer.strategy.reduce(stats, reduce_op="mean")
            self.update_statistics(stats, sae.latent_mask)
            quantiles = self.scores().quantile(torch.tensor([0.1, 0.5, 0.9], device=stats.device))
        # Tensors, not floats: logging should not force a device sync every step.
        pl_module.log("atm/masked", (~sae.latent_mask).sum().float())
        for name, value in zip(("atm/score_q10", "atm/score_q50", "atm/score_q90"), quantiles):
            pl_module.log(name, value)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._mask_during_validation = pl_module.sae.latent_mask.clone()
        pl_module.sae.latent_mask.fill_(True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._mask_during_validation is not None:
            pl_module.sae.latent_mask.copy_(self._mask_during_validation)
            self._mask_during_validation = None

    def on_train_end(self, trainer, pl_module) -> None:
        # Runs before the module's own on_train_end, so an SAE exported there is whole.
        pl_module.sae.latent_mask.fill_(True)

    # -- resume ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        def cpu(t):
            return None if t is None else t.detach().cpu()

        return {
            "mean_activation": cpu(self.mean_activation),
            "frequency": cpu(self.frequency),
            "contribution": cpu(self.contribution),
            "steps": self.steps,
            "last_mask_step": self.last_mask_step,
            "mask": cpu(self.mask),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        # Tensors come back on the CPU; update_statistics moves them to the latents' device.
        self.mean_activation = state_dict["mean_activation"]
        self.frequency = state_dict["frequency"]
        self.contribution = state_dict["contribution"]
        self.steps, self.last_mask_step = state_dict["steps"], state_dict["last_mask_step"]
        self.mask = state_dict["mask"]
