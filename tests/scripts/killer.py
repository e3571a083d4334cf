"""Callbacks that kill the training process, as a crash or a preemption would: no cleanup, no final checkpoint."""

import os

import lightning as L


class KillAtEpoch(L.Callback):
    """Dies as epoch ``epoch`` starts (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int = 2):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os._exit(137)  # like SIGKILL


class KillAtStep(L.Callback):
    """Dies as the batch after optimizer step ``step`` starts.

    A step checkpoint of that step is complete by then: ModelCheckpoint saves at the end of the batch
    that made it. Steps done since the last checkpoint are lost, as they would be in a real crash.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os._exit(137)
