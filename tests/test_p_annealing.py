"""PAnnealing: the schedule of p, continuity of the penalty across changes, warm-up, and resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from commands import quiet_trainer
from torch.utils.data import DataLoader

from sarm.callbacks.p_annealing import PAnnealing, p_schedule
from sarm.sae.relu import ReLUSAE, sparsity_penalty

D_IN, N_LATENTS, BATCH = 16, 64, 32


class TinySAEModule(L.LightningModule):
    """The SAE-module contract PAnnealing relies on: ``sae``, ``sparsity_p``, ``sparsity_coefficient``,
    and a training_step returning loss, latents and x."""

    def __init__(self, sparsity_coefficient: float = 0.05, lr: float = 1e-3):
        super().__init__()
        self.sae = ReLUSAE(D_IN, N_LATENTS, input_norm="none")
        self.sparsity_p = 1.0
        self.sparsity_coefficient = sparsity_coefficient
        self.lr = lr

    def training_step(self, x, batch_idx):
        out = self.sae(x)
        fvu = (out.x - out.x_hat).pow(2).sum(-1).mean() / (out.x - out.x.mean(0)).pow(2).sum(-1).mean()
        loss = fvu + self.sparsity_coefficient * sparsity_penalty(out.latents, self.sae.W_dec, self.sparsity_p)
        return {"loss": loss, "latents": out.latents.detach(), "x": out.x.detach()}

    def configure_optimizers(self):
        return torch.optim.Adam(self.sae.parameters(), lr=self.lr)


def fixed_batch(seed: int = 0) -> torch.Tensor:
    # Scaled up so latents are well above 1, where S_p moves a lot with p (S_p of values near 1 barely does).
    return 10 * torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed))


def repeated_batch_loader(batches_per_epoch: int = 50) -> DataLoader:
    """Every batch is the same fixed batch, so changes in the penalty come from p and α, not the data."""
    return DataLoader(fixed_batch().repeat(batches_per_epoch, 1), batch_size=BATCH, shuffle=False)


class Recorder(L.Callback):
    """Records, at each step's start (after PAnnealing set them), p, the coefficient and the penalty
    α · S_p on the fixed batch."""

    def __init__(self, stop_at: int | None = None):
        self.p, self.coefficient, self.penalty = {}, {}, {}
        self.stop_at = stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        self.p[step] = pl_module.sparsity_p
        self.coefficient[step] = pl_module.sparsity_coefficient
        with torch.no_grad():
            latents = pl_module.sae(fixed_batch()).latents
            self.penalty[step] = pl_module.sparsity_coefficient * float(
                sparsity_penalty(latents, pl_module.sae.W_dec, pl_module.sparsity_p)
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True


# -- the schedule ---------------------------------------------------------------------------------


def test_paper_schedule_starts_at_27_percent_and_ends_at_p_end_on_the_last_step():
    schedule = p_schedule(1000, p_start=1.0, p_end=0.2, n_updates=10, anneal_start=0.27, anneal_end=1.0)
    assert [step for step, _ in schedule] == [270, 351, 432, 513, 594, 675, 756, 837, 918, 999]
    assert [p for _, p in schedule] == pytest.approx([0.92, 0.84, 0.76, 0.68, 0.60, 0.52, 0.44, 0.36, 0.28, 0.2])
    assert schedule[-1] == (999, 0.2)  # exactly p_end, on the run's last step (0 … 999)


def test_int_anchors_are_steps():
    schedule = p_schedule(100, p_start=1.0, p_end=0.6, n_updates=5, anneal_start=10, anneal_end=50)
    assert [step for step, _ in schedule] == [10, 20, 30, 40, 50]
    assert [p for _, p in schedule] == pytest.approx([0.92, 0.84, 0.76, 0.68, 0.6])


def test_anneal_end_past_the_run_is_clamped_to_the_last_step():
    schedule = p_schedule(20, p_start=1.0, p_end=0.4, n_updates=3, anneal_start=0.5, anneal_end=500)
    assert schedule == [(10, pytest.approx(0.8)), (14, pytest.approx(0.6)), (19, 0.4)]


def test_updates_falling_on_one_step_keep_the_later_p():
    # Five updates squeezed into steps 2..4: steps 2, 2, 3, 3, 4.
    schedule = p_schedule(5, p_start=1.0, p_end=0.5, n_updates=5, anneal_start=2, anneal_end=4)
    assert schedule == [(2, pytest.approx(0.8)), (3, pytest.approx(0.6)), (4, 0.5)]


def test_a_single_update_jumps_to_p_end_at_anneal_start():
    assert p_schedule(100, 1.0, 0.3, 1, 0.5, 1.0) == [(50, 0.3)]


@pytest.mark.parametrize("start, end", [(1.5, 1.0), (0.9, 0.2), (60, 50)])
def test_bad_anchors_are_refused(start, end):
    with pytest.raises(ValueError):
        p_schedule(100, 1.0, 0.2, 10, start, end)


def test_alpha_warmup_is_linear_from_zero():
    callback = PAnnealing(alpha_warmup_steps=4)
    assert [callback.alpha_warmup_factor(s) for s in (0, 1, 2, 4, 100)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert PAnnealing().alpha_warmup_factor(0) == 1.0


# -- in a real Trainer ----------------------------------------------------------------------------


def test_training_anneals_p_to_p_end_and_logs_it():
    torch.manual_seed(0)
    module = TinySAEModule(sparsity_coefficient=0.05)
    annealing = PAnnealing(
        p_start=1.0, p_end=0.5, n_updates=4, anneal_start=0.5, anneal_end=1.0, queue_length=3, alpha_warmup_steps=5
    )
    recorder = Recorder()
    quiet_trainer(40, [annealing, recorder]).fit(module, repeated_batch_loader())

    assert annealing.schedule == [
        (20, pytest.approx(0.875)),
        (26, pytest.approx(0.75)),
        (32, pytest.approx(0.625)),
        (39, 0.5),
    ]
    assert all(recorder.p[s] == 1.0 for s in range(20))  # constant before anneal_start
    assert recorder.p[39] == 0.5 and module.sparsity_p == 0.5  # p_end is reached, on the last step
    assert [recorder.coefficient[s] for s in range(6)] == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    metrics = annealing_metrics(module)
    assert metrics["p_annealing/p"] == pytest.approx(0.5)
    assert metrics["p_annealing/alpha"] == pytest.approx(annealing.alpha)
    assert metrics["p_annealing/alpha"] != pytest.approx(0.05)  # α was rescaled on the way


def annealing_metrics(module: L.LightningModule) -> dict[str, float]:
    return {k: float(v) for k, v in module.trainer.callback_metrics.items() if k.startswith("p_annealing/")}


def test_penalty_is_continuous_across_every_change_of_p():
    torch.manual_seed(0)
    module = TinySAEModule(sparsity_coefficient=0.05, lr=1e-4)
    annealing = PAnnealing(p_start=1.0, p_end=0.2, n_updates=5, anneal_start=10, anneal_end=1.0, queue_length=4)
    recorder = Recorder()
    quiet_trainer(30, [annealing, recorder]).fit(module, repeated_batch_loader())

    for step, p in annealing.schedule:
        assert recorder.p[step] == p and recorder.p[step - 1] != p
        before, after = recorder.penalty[step - 1], recorder.penalty[step]
        assert after == pytest.approx(before, rel=0.05), f"penalty jumps at step {step}: {before} -> {after}"
        # Without the rescaling of α it would jump: the old coefficient times the new S_p.
        unrescaled = recorder.coefficient[step - 1] * after / recorder.coefficient[step]
        assert unrescaled < 0.8 * before


def test_state_dict_round_trip():
    callback = PAnnealing(queue_length=3)
    callback.p, callback.alpha, callback.next_update = 0.6, 0.123, 4
    callback.sparsity_now.extend([1.0, 2.0, 3.0, 4.0])  # only the last 3 are kept
    callback.sparsity_next.extend([5.0, 6.0])
    restored = PAnnealing(queue_length=3)
    restored.load_state_dict(callback.state_dict())
    assert restored.state_dict() == callback.state_dict()
    assert list(restored.sparsity_now) == [2.0, 3.0, 4.0] and restored.sparsity_now.maxlen == 3


# Every batch is the same, so resuming mid-epoch with a non-resumable loader is harmless here.
@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended")
def test_resumed_run_follows_the_uninterrupted_one(tmp_path):
    def annealing():
        return PAnnealing(p_start=1.0, p_end=0.4, n_updates=3, anneal_start=0.3, anneal_end=1.0, queue_length=3)

    torch.manual_seed(0)
    straight, straight_record = annealing(), Recorder()
    quiet_trainer(30, [straight, straight_record]).fit(TinySAEModule(), repeated_batch_loader())

    assert [step for step, _ in straight.schedule] == [9, 19, 29]

    # The same run, stopped after 17 steps (one S_p measurement queued for the change at step 19), resumed.
    torch.manual_seed(0)
    first = quiet_trainer(30, [annealing(), Recorder(stop_at=17)])
    first.fit(TinySAEModule(), repeated_batch_loader())
    assert first.global_step == 17
    first.save_checkpoint(tmp_path / "mid.ckpt")
    saved = torch.load(tmp_path / "mid.ckpt", weights_only=False)["callbacks"]["PAnnealing"]
    assert saved["next_update"] == 1 and len(saved["sparsity_now"]) == 1
    resumed, resumed_record = annealing(), Recorder()
    quiet_trainer(30, [resumed, resumed_record]).fit(
        TinySAEModule(), repeated_batch_loader(), ckpt_path=tmp_path / "mid.ckpt"
    )

    for step in range(17, 30):
        assert resumed_record.p[step] == straight_record.p[step]
        assert resumed_record.coefficient[step] == pytest.approx(straight_record.coefficient[step], rel=1e-6)
    assert resumed.p == 0.4 and resumed.alpha == pytest.approx(straight.alpha, rel=1e-6)
