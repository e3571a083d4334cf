"""``StopOnSignal``: Lightning loops stop on SIGTERM and SIGINT and say where (see ``sarm.stop``)."""

from __future__ import annotations

import signal

from lightning.pytorch.callbacks import Callback

from sarm.stop import Stopped, as_stopped


class StopOnSignal(Callback):
    """Stops predict loops on SIGTERM (Lightning checks only in training and evaluation), and says
    where any loop stopped and which checkpoint to resume from."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.received_sigterm:
            raise Stopped(signal.SIGTERM)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if as_stopped(exception) is None:
            return
        if trainer.predicting:
            where = f"batch {trainer.predict_loop.batch_progress.current.completed} of the predict loop"
        else:
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        resume = None
        if trainer.training:
            # Checkpoint callbacks run their own on_exception after this one (Lightning orders them last),
            # so name the rule Lightning resolves, not a file that may not be written yet.
            callbacks = [c for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)]
            if any(c.save_last for c in callbacks):
                resume = f"resume with the same command and --ckpt_path last (checkpoints in {callbacks[0].dirpath})"
            elif callbacks:
                resume = f"resume with the same command and --ckpt_path <a checkpoint in {callbacks[0].dirpath}>"
            else:
                resume = (
                    "no checkpoint was kept; run the same command again (a ModelCheckpoint with save_last "
                    "would let it resume)"
                )
        exception.sarm_where, exception.sarm_resume = where, resume
