"""The dense baseline: a conventional reward model on the same truncated backbone.

    reward = w · pool(standardize(h))

Same backbone, layer, pooling, data, loss and trainer as SARM; the only difference is that the head
reads the hidden state itself instead of SAE features. It is the accuracy SARM has to match.
"""

from __future__ import annotations

from sarm.errors import SarmInputError
from sarm.reward.module import RewardModelModule
from sarm.reward.network import DenseNetwork


class DenseRM(RewardModelModule):
    """Linear reward head on the standardized hidden state.

    Args:
        d_in: hidden size; default: ``init_from``'s, else read from the datamodule.
        **kwargs: the shared arguments of ``RewardModelModule`` (mode, pooling, lr, LoRA, init_from,
            export_dir, ...).
    """

    kind = "dense"

    def __init__(self, d_in: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if self.hparams.init_from is not None:
            self.network = self.restart_network()
            if d_in is not None and d_in != self.network.input_size():
                raise SarmInputError(
                    f"d_in = {d_in}, but init_from = {self.hparams.init_from} reads hidden states "
                    f"of width {self.network.input_size()}: leave d_in unset"
                )
        elif d_in is not None:
            self.network = DenseNetwork(d_in, self.pooling)

    def build_network(self, hidden_size: int) -> DenseNetwork:
        return DenseNetwork(hidden_size, self.pooling)
