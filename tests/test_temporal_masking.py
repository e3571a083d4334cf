"""AdaptiveTemporalMasking: the masking math, the EMAs, masking in training, and the mask lifted outside it."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from commands import quiet_trainer
from torch.utils.data import DataLoader

from sarm.callbacks.temporal_masking import (
    AdaptiveTemporalMasking,
    importance_scores,
    latent_statistics,
    masking_probabilities,
    sample_mask,
)
from sarm.sae.relu import ReLUSAE, sparsity_penalty
from sarm.sae.topk import TopKSAE

D_IN, N_LATENTS, BATCH = 16, 64, 32

# The tiny module validates in one test only; elsewhere Lightning notes that it skips validation.
pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")


class TinySAEModule(L.LightningModule):
    """The SAE-module contract the callback relies on: ``sae`` and a training_step returning latents."""

    def __init__(self, sparsity_coefficient: float = 0.01):
        super().__init__()
        self.sae = ReLUSAE(D_IN, N_LATENTS, input_norm="none")
        self.sparsity_p = 1.0
        self.sparsity_coefficient = sparsity_coefficient
        self.validation_masks: list[torch.Tensor] = []

    def training_step(self, x, batch_idx):
        out = self.sae(x)
        fvu = (out.x - out.x_hat).pow(2).sum(-1).mean() / (out.x - out.x.mean(0)).pow(2).sum(-1).mean()
        loss = fvu + self.sparsity_coefficient * sparsity_penalty(out.latents, self.sae.W_dec, self.sparsity_p)
        return {"loss": loss, "latents": out.latents.detach(), "x": out.x.detach()}

    def validation_step(self, x, batch_idx):
        self.validation_masks.append(self.sae.latent_mask.clone())

    def configure_optimizers(self):
        return torch.optim.Adam(self.sae.parameters(), lr=1e-2)


def loader(n_batches: int = 8, seed: int = 0) -> DataLoader:
    data = torch.randn(n_batches * BATCH, D_IN, generator=torch.Generator().manual_seed(seed))
    return DataLoader(data, batch_size=BATCH, shuffle=False)


class MaskRecorder(L.Callback):
    """The mask in force during each training step (recorded after the ATM callback's hooks)."""

    def __init__(self):
        self.at_start, self.at_end = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at_start[trainer.global_step] = pl_module.sae.latent_mask.clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at_end[trainer.global_step - 1] = pl_module.sae.latent_mask.clone()


# -- the masking math -----------------------------------------------------------------------------


def test_probability_is_zero_at_or_above_threshold_and_grows_as_the_score_falls():
    scores = torch.linspace(0.0, 2.0, 201)
    logs = (scores + 1e-3 * scores.mean()).log()
    std, mean = logs.std(unbiased=False), logs.mean()
    threshold = mean - 1.0 * std
    probs = masking_probabilities(scores, k=1.0, slope=1.0, max_prob=0.6)

    assert (probs[logs >= threshold] == 0).all()
    below = probs[logs < threshold]
    assert (below > 0).all()
    assert (below[:-1] >= below[1:]).all()  # scores ascend, so probabilities descend
    assert probs.max() == pytest.approx(0.6)  # the cap binds for the lowest scores
    i = int((probs < 0.6).nonzero()[0])  # the first point under the cap, still below the threshold
    assert 0 < probs[i] < 0.6
    assert probs[i] == pytest.approx(float(1.0 * (threshold - logs[i]) / std), rel=1e-5)


def test_right_skewed_scores_still_get_masked():
    # Scores with a long upper tail (as measured on real activations): mean − std of the raw scores
    # lies below every score, which would mask nothing; the log-space threshold does not.
    scores = torch.exp(torch.randn(2048, generator=torch.Generator().manual_seed(0)))
    scores = scores / scores.mean()
    assert scores.min() > scores.mean() - scores.std(unbiased=False)
    probs = masking_probabilities(scores)
    assert 0.05 < (probs > 0).float().mean() < 0.3


def test_equal_scores_mask_nothing():
    assert (masking_probabilities(torch.ones(10)) == 0).all()


def test_empirical_masking_rate_matches_the_probabilities():
    probs = torch.tensor([0.0, 0.05, 0.2, 0.5, 0.9, 1.0])
    scores = -probs  # irrelevant here: the cap is not reached
    draws = 4000
    masked = (
        torch.stack(
            [
                ~sample_mask(probs, scores, torch.Generator().manual_seed(s), max_masked_fraction=1.0)
                for s in range(draws)
            ]
        )
        .float()
        .mean(0)
    )
    assert masked == pytest.approx(probs, abs=0.03)


def test_at_most_max_masked_fraction_is_masked_lowest_scores_first():
    scores = torch.arange(20.0)
    probs = torch.ones(20)  # every latent drawn
    kept = sample_mask(probs, scores, torch.Generator().manual_seed(0), max_masked_fraction=0.25)
    assert (~kept).sum() == 5
    assert (~kept).nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "sae", [ReLUSAE(D_IN, N_LATENTS, "none"), TopKSAE(D_IN, N_LATENTS, 4, "none")], ids=["relu", "topk"]
)
def test_a_masked_latent_takes_no_part_in_the_forward_pass(sae):
    x = torch.randn(8, D_IN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent = int(sae(x).latents[0].argmax())  # active on token 0 before masking
        sae.latent_mask[latent] = False
        out = sae(x)
        sae.W_dec[latent] += 100.0  # its decoder row no longer matters
        changed = sae(x)
    assert (out.latents[:, latent] == 0).all()
    assert torch.equal(out.x_hat, changed.x_hat)
    if isinstance(sae, TopKSAE):
        assert ((out.latents > 0).sum(-1) <= sae.k).all()  # another latent took the freed slot
        assert (out.latents[0] > 0).sum() == sae.k


# -- statistics and scores ------------------------------------------------------------------------


def test_statistics_and_emas_follow_their_definitions():
    latents = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    norms = torch.tensor([1.0, 2.0, 0.5])
    stats = latent_statistics(latents, norms)
    assert stats[0].tolist() == [2.0, 0.0, 1.0]  # mean activation
    assert stats[1].tolist() == [1.0, 0.0, 0.5]  # frequency
    assert stats[2].tolist() == [2.0, 0.0, 0.5]  # mean |f| · ‖W_dec,i‖

    atm = AdaptiveTemporalMasking(beta=0.9)
    atm.update_statistics(stats, kept=torch.ones(3, dtype=torch.bool))  # the first step sets the EMAs
    assert atm.mean_activation.tolist() == [2.0, 0.0, 1.0]
    assert atm.magnitude.tolist() == [2.0, 0.0, 2.0]  # mean activation when firing, 0 if never fired

    second = latent_statistics(torch.tensor([[0.0, 4.0, 0.0]]), norms)
    atm.update_statistics(second, kept=torch.tensor([True, True, False]))
    assert atm.mean_activation.tolist() == pytest.approx([0.9 * 2.0, 0.1 * 4.0, 1.0])  # latent 2 masked: frozen
    assert atm.frequency.tolist() == pytest.approx([0.9, 0.1, 0.5])
    assert atm.contribution.tolist() == pytest.approx([1.8, 0.8, 0.5])
    assert atm.steps == 2


def test_importance_is_the_weighted_mean_of_mean_normalized_signals():
    magnitude, frequency, contribution = torch.tensor([1.0, 3.0]), torch.tensor([0.1, 0.3]), torch.tensor([4.0, 0.0])
    assert importance_scores(magnitude, frequency, contribution, (0, 1, 0)).tolist() == pytest.approx([0.5, 1.5])
    assert importance_scores(magnitude, frequency, contribution, (1, 1, 1)).tolist() == pytest.approx(
        [(0.5 + 0.5 + 2.0) / 3, (1.5 + 1.5 + 0.0) / 3]
    )


def test_step_statistics_are_averaged_across_ranks_before_the_ema():
    """The callback passes the step's statistics through trainer.strategy.reduce (a mean over ranks)."""
    other_rank = latent_statistics(torch.tensor([[5.0, 5.0, 5.0]]), torch.ones(3))
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: (t + other_rank) / 2 if reduce_op == "mean" else None)
    fake_trainer = SimpleNamespace(strategy=strategy, global_step=1)
    module = SimpleNamespace(sae=ReLUSAE(4, 3, "none"), log=lambda *a, **k: None)
    atm = AdaptiveTemporalMasking()
    atm.on_train_batch_end(fake_trainer, module, {"latents": torch.tensor([[1.0, 0.0, 3.0]])}, None, 0)
    assert atm.mean_activation.tolist() == [3.0, 2.5, 4.0]
    assert atm.frequency.tolist() == [1.0, 0.5, 1.0]


# -- in a real Trainer ----------------------------------------------------------------------------


def test_masking_follows_the_schedule_is_capped_and_lifted_for_validation_and_at_the_end():
    torch.manual_seed(0)
    module = TinySAEModule()
    atm = AdaptiveTemporalMasking(
        warmup_steps=3, update_every=2, threshold_stds=0.5, prob_slope=10.0, max_mask_prob=1.0, max_masked_fraction=0.25
    )
    recorder = MaskRecorder()
    # Epochs of 8 batches: validation after steps 8, 16, 24.
    quiet_trainer(24, [atm, recorder], limit_val_batches=1, num_sanity_val_steps=0).fit(
        module, loader(), loader(seed=1)
    )

    resample_steps = [s for s in range(24) if s >= 3 and (s - 3) % 2 == 0]
    for step in range(24):
        mask = recorder.at_start[step]
        if step < 3:
            assert mask.all()  # no masking during warm-up
        elif step not in resample_steps:
            assert torch.equal(mask, recorder.at_end[step - 1])  # held between updates, across validation
        assert (~mask).sum() <= int(0.25 * N_LATENTS)
    assert any(not recorder.at_start[s].all() for s in resample_steps)  # it does mask
    assert len({tuple(recorder.at_start[s].tolist()) for s in resample_steps}) > 1  # resampled over time

    assert len(module.validation_masks) == 3 and all(m.all() for m in module.validation_masks)
    assert module.sae.latent_mask.all()  # the trained SAE is whole
    metrics = module.trainer.callback_metrics
    assert {"atm/masked", "atm/score_q10", "atm/score_q50", "atm/score_q90"} <= set(metrics)
    assert metrics["atm/score_q10"] <= metrics["atm/score_q50"] <= metrics["atm/score_q90"]
    assert metrics["atm/masked"] == (~recorder.at_end[23]).sum()


def test_a_run_that_never_passes_warmup_is_identical_to_a_run_without_the_callback():
    def train(callbacks):
        torch.manual_seed(0)
        module = TinySAEModule()
        quiet_trainer(12, callbacks).fit(module, loader())
        return module

    plain = train([])
    atm = AdaptiveTemporalMasking(warmup_steps=10_000)
    masked = train([atm])
    assert atm.steps == 12  # it watched every step
    for (name, a), (_, b) in zip(plain.state_dict().items(), masked.state_dict().items()):
        assert torch.equal(a, b), name


def test_state_dict_round_trip_restores_emas_and_reproduces_the_mask():
    torch.manual_seed(0)
    atm = AdaptiveTemporalMasking(warmup_steps=2, update_every=3, prob_slope=10.0, max_mask_prob=1.0)
    quiet_trainer(10, [atm]).fit(TinySAEModule(), loader())

    restored = AdaptiveTemporalMasking(warmup_steps=2, update_every=3, prob_slope=10.0, max_mask_prob=1.0)
    restored.load_state_dict(atm.state_dict())
    for name in ("mean_activation", "frequency", "contribution", "mask"):
        assert torch.equal(getattr(restored, name), getattr(atm, name)), name
    assert (restored.steps, restored.last_mask_step) == (atm.steps, atm.last_mask_step) == (10, 8)
    # The same EMAs and step give the same draw: resumed runs (and all ranks) agree on the mask.
    assert torch.equal(restored.resample_mask(11), atm.resample_mask(11))
