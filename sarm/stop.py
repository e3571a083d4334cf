"""Stopping on a signal: every command ends with a sentence and a status that says it was stopped.

``timeout``, SLURM preemption, ``docker stop`` and Kubernetes stop a job with SIGTERM; a user at a
terminal with SIGINT. A stopped run must never look like success (``sarm fit … && sarm report …``
would go on with a stale export), so the CLI exits with 128 + the signal's number (143, 130) after
one line: ``sarm: error: stopped by SIGTERM at <where>; <how to resume>``.

How each kind of work stops:

* outside a Lightning loop (reading data, loading a model, scoring, writing a report) the handler
  raises ``Stopped`` at once;
* inside ``Trainer.fit``/``validate``/``test`` Lightning has its own SIGTERM handler, which lets the
  current step finish and then raises its ``SIGTERMException``: the weights are never left half
  updated, and a ``ModelCheckpoint(save_on_exception=True)`` can write a checkpoint to resume from.
  Our handler stands aside while Lightning's is installed;
* Lightning's predict loop does not check for SIGTERM, so ``sarm.callbacks.StopOnSignal`` does after every batch
  (``sarm cache`` stops within one batch);
* SIGINT raises ``Stopped`` everywhere (Lightning would turn a KeyboardInterrupt into exit 1).
"""

from __future__ import annotations

import signal
import sys
from typing import Any


class Stopped(BaseException):  # noqa: N818 (it is how a run ends, not an error in the program)
    """The run was stopped by a signal. A BaseException, so ``except Exception`` clean-ups don't swallow it.

    ``where`` says how far the run got and ``resume`` how to go on; the code that knows fills them in
    as the exception passes (a Lightning callback, the cache writer)."""

    def __init__(self, signum: int, where: str | None = None, resume: str | None = None):
        super().__init__(signum)
        self.signum, self.where, self.resume = signum, where, resume

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        text = f"stopped by {signal.Signals(self.signum).name}"
        if self.where:
            text += f" at {self.where}"
        return text + f"; {self.resume or 'run the same command again'}"


def _raise_stopped(signum: int, frame: Any) -> None:
    if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is not _raise_stopped:
        return  # a Lightning Trainer has its own handler installed now, and stops after the current step
    raise Stopped(signum)


def install() -> None:
    """Make SIGTERM and SIGINT raise ``Stopped`` (called once, by the CLI, in the main thread)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stopped)


def as_stopped(exception: BaseException) -> Stopped | None:
    """The ``Stopped`` that ``exception`` stands for: itself, or Lightning's SIGTERMException."""
    if isinstance(exception, Stopped):
        return exception
    if "lightning.pytorch" in sys.modules:  # without Lightning loaded, no SIGTERMException can have been raised
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            return Stopped(signal.SIGTERM)
    return None


def describe(exception: BaseException) -> Stopped | None:
    """``as_stopped`` with what ``StopOnSignal`` learnt about where the run was."""
    stopped = as_stopped(exception)
    if stopped is not None:
        stopped.where = stopped.where or getattr(exception, "sarm_where", None)
        stopped.resume = stopped.resume or getattr(exception, "sarm_resume", None)
    return stopped
