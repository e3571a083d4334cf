"""A callback that kills the training process at the start of an epoch, as a crash or a preemption would."""

import os

import lightning as L


class KillAtEpoch(L.Callback):
    def __init__(self, epoch: int = 2):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os._exit(137)  # no cleanup, no final checkpoint: like SIGKILL
