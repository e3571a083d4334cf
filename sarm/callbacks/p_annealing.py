"""p-annealing of the sparsity penalty (Karvonen et al. 2024, arXiv 2408.00113).

A ReLU SAE is trained with the "Lp^p" penalty

    S_p(f) = mean over tokens of Σ_i (f_i · ‖W_dec,i‖)^p          (``sarm.sae.relu.sparsity_penalty``)

and p is lowered from ``p_start`` (L1, convex, easy to optimize) towards ``p_end`` (closer to L0)
during training. The loss's sparsity term is α · S_p, with α = ``pl_module.sparsity_coefficient``.

Schedule (``p_schedule``). ``n_updates`` changes of p at steps evenly spaced from ``anneal_start``
to ``anneal_end``:

    s_j = a + ⌊(b − a) · j / (n − 1)⌋,   p_j = p_start + (p_end − p_start) · (j + 1) / n,   j = 0 … n−1

so every update changes p, p stays at ``p_start`` before step a, and the last update sets p to
exactly ``p_end``. a and b are steps: an int is a step, a float in [0, 1] a fraction of the run's
total optimizer steps T (``trainer.estimated_stepping_batches``). b is clamped to T − 1.

Decision: the final p IS reached. The reference implementation places its updates at
linspace(anneal_start, T, n); the last one falls on step T, which never runs (steps are 0 … T − 1),
so p never reaches ``p_end`` there (and its first update re-sets p_start, a no-op). Here the last
update is at step min(b, T − 1), inside training, and p_end is in force for at least that last step.
If a short run makes several updates fall on the same step, only the last of them is kept (p jumps
straight to the later value).

Keeping the penalty continuous. When p changes to p', S_p' can differ from S_p by orders of
magnitude. Over the last ``queue_length`` training batches before a change the callback records
S_p(f) and S_p'(f) (no grad, averaged across ranks), and at the change sets

    α ← α · mean(S_p) / mean(S_p')

so α' · S_p' ≈ α · S_p: the sparsity pressure does not jump. With nothing recorded (a change at
step 0) α is left as is.

Optional warm-up: the coefficient the loss uses is α · min(1, step / ``alpha_warmup_steps``).

p and the coefficient are written to ``pl_module.sparsity_p`` / ``pl_module.sparsity_coefficient``
in ``on_train_batch_start`` from ``trainer.global_step``; the queues, α, p and the index of the next
update go through ``state_dict`` so a resumed run continues the same schedule.
"""

from __future__ import annotations

import math
from collections import deque

import lightning as L
import torch

from sarm.sae.base import as_dense
from sarm.sae.relu import sparsity_penalty


def resolve_step(when: int | float, total_steps: int) -> int:
    """A step from an int (a step) or a float in [0, 1] (a fraction of ``total_steps``)."""
    if isinstance(when, bool):
        raise TypeError(f"expected an int step or a float fraction, got {when!r}")
    if isinstance(when, float):
        if not 0.0 <= when <= 1.0:
            raise ValueError(f"{when} is a float outside [0, 1]: give a fraction of the run, or an int step")
        return int(when * total_steps)
    if when < 0:
        raise ValueError(f"step {when} is negative")
    return int(when)


def p_schedule(
    total_steps: int,
    p_start: float = 1.0,
    p_end: float = 0.2,
    n_updates: int = 10,
    anneal_start: int | float = 0.27,
    anneal_end: int | float = 1.0,
) -> list[tuple[int, float]]:
    """The (step, p) changes of p over a run of ``total_steps`` optimizer steps; see the module docstring.

    Each pair means "from this step on, p is this value". The last pair's p is exactly ``p_end``
    and its step is at most ``total_steps − 1``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps = {total_steps}: need at least one step")
    if n_updates < 1:
        raise ValueError(f"n_updates = {n_updates}: need at least one update")
    start = resolve_step(anneal_start, total_steps)
    end = min(resolve_step(anneal_end, total_steps), total_steps - 1)
    if start > end:
        raise ValueError(f"anneal_start (step {start}) is after anneal_end (step {end}) in a {total_steps}-step run")
    changes: dict[int, float] = {}  # step -> p; a later update on the same step overwrites an earlier one
    for j in range(n_updates):
        step = start + (end - start) * j // (n_updates - 1) if n_updates > 1 else start
        changes[step] = p_end if j == n_updates - 1 else p_start + (p_end - p_start) * (j + 1) / n_updates
    return sorted(changes.items())


class PAnnealing(L.Callback):
    """Anneals the sparsity exponent p of a ReLU SAE's Lp^p penalty, rescaling α to keep the penalty continuous.

    The module must expose ``sae`` (with ``W_dec``), float attributes ``sparsity_p`` and
    ``sparsity_coefficient`` (used by its loss), and return ``{"loss", "latents", ...}`` (latents dense or as
    ``TopLatents``) from
    ``training_step``.

    Args:
        p_start: exponent before annealing (1 = L1).
        p_end: exponent after the last update (paper: 0.2); reached exactly, inside the run.
        n_updates: number of changes of p, evenly spaced between ``anneal_start`` and ``anneal_end``.
        anneal_start: first change: an int is a step, a float in [0, 1] a fraction of the run's
            total optimizer steps (paper: about 27%).
        anneal_end: last change, same convention; clamped to the run's last step.
        queue_length: batches over which S_p and S_p_next are averaged to rescale α at a change.
        alpha_warmup_steps: if > 0, the coefficient rises linearly from 0 to α over these first steps.
    """

    def __init__(
        self,
        p_start: float = 1.0,
        p_end: float = 0.2,
        n_updates: int = 10,
        anneal_start: int | float = 0.27,
        anneal_end: int | float = 1.0,
        queue_length: int = 10,
        alpha_warmup_steps: int = 0,
    ):
        if not 0 < p_end <= p_start:
            raise ValueError(f"need 0 < p_end <= p_start, got p_start={p_start}, p_end={p_end}")
        if n_updates < 1 or queue_length < 1 or alpha_warmup_steps < 0:
            raise ValueError("n_updates and queue_length must be >= 1, alpha_warmup_steps >= 0")
        self.p_start, self.p_end, self.n_updates = p_start, p_end, n_updates
        self.anneal_start, self.anneal_end = anneal_start, anneal_end
        self.queue_length, self.alpha_warmup_steps = queue_length, alpha_warmup_steps

        self.schedule: list[tuple[int, float]] = []  # set at train start, when the run's length is known
        self.p = p_start
        self.alpha: float | None = None  # base coefficient; read from the module at train start
        self.next_update = 0  # index into schedule
        self.sparsity_now: deque[float] = deque(maxlen=queue_length)  # S_p at the current p
        self.sparsity_next: deque[float] = deque(maxlen=queue_length)  # S_p at the next scheduled p

    # -- schedule -------------------------------------------------------------------------------

    def total_steps(self, trainer: L.Trainer) -> int:
        total = trainer.estimated_stepping_batches
        if not math.isinf(total):
            return int(total)
        if isinstance(self.anneal_start, float) or isinstance(self.anneal_end, float):
            raise ValueError(
                "PAnnealing: fractional anneal_start/anneal_end need a run with a known length "
                "(max_steps or max_epochs); give int steps instead"
            )
        return max(self.anneal_start, self.anneal_end) + 1  # unbounded run: nothing to clamp

    def alpha_warmup_factor(self, step: int) -> float:
        if self.alpha_warmup_steps <= 0:
            return 1.0
        return min(1.0, step / self.alpha_warmup_steps)

    def apply_next_update(self) -> None:
        """Move p to the next scheduled value, rescaling α by mean(S_p) / mean(S_p_next)."""
        _, p_next = self.schedule[self.next_update]
        if self.sparsity_now:
            now = sum(self.sparsity_now) / len(self.sparsity_now)
            nxt = sum(self.sparsity_next) / len(self.sparsity_next)
            if nxt > 0:  # all-zero latents: nothing to match, keep α
                self.alpha *= now / nxt
        self.p = p_next
        self.next_update += 1
        # The recorded values refer to the old (p, p_next) pair.
        self.sparsity_now.clear()
        self.sparsity_next.clear()

    # -- hooks ----------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.schedule = p_schedule(
            self.total_steps(trainer), self.p_start, self.p_end, self.n_updates, self.anneal_start, self.anneal_end
        )
        if self.alpha is None:  # not restored from a checkpoint
            self.alpha = float(pl_module.sparsity_coefficient)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        # A loop, not an if: a resumed run with a shorter schedule may have several updates due.
        while self.next_update < len(self.schedule) and self.schedule[self.next_update][0] <= step:
            self.apply_next_update()
        pl_module.sparsity_p = self.p
        pl_module.sparsity_coefficient = self.alpha * self.alpha_warmup_factor(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("p_annealing/p", float(self.p))
        pl_module.log("p_annealing/alpha", float(pl_module.sparsity_coefficient))
        if self.next_update >= len(self.schedule):
            return
        next_step, p_next = self.schedule[self.next_update]
        # Only the last queue_length batches before a change are used: skip the work before that.
        # (global_step has already counted this batch's optimizer step.)
        if next_step - trainer.global_step >= self.queue_length:
            return
        if outputs is None:  # training_step skipped this batch
            return
        if not isinstance(outputs, dict) or "latents" not in outputs:
            raise TypeError("PAnnealing needs training_step to return a dict with 'latents'")
        with torch.no_grad():
            latents = as_dense(outputs["latents"]).detach()
            W_dec = pl_module.sae.W_dec.detach()
            pair = torch.stack([sparsity_penalty(latents, W_dec, self.p), sparsity_penalty(latents, W_dec, p_next)])
            # Every rank must rescale α identically: average the measurement over ranks.
            pair = trainer.strategy.reduce(pair.float(), reduce_op="mean")
        self.sparsity_now.append(float(pair[0]))
        self.sparsity_next.append(float(pair[1]))

    # -- resume ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "p": self.p,
            "alpha": self.alpha,
            "next_update": self.next_update,
            "sparsity_now": list(self.sparsity_now),
            "sparsity_next": list(self.sparsity_next),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.p, self.alpha, self.next_update = state_dict["p"], state_dict["alpha"], state_dict["next_update"]
        self.sparsity_now = deque(state_dict["sparsity_now"], maxlen=self.queue_length)
        self.sparsity_next = deque(state_dict["sparsity_next"], maxlen=self.queue_length)
