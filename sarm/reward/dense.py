"""The dense baseline: a conventional reward model on the same truncated backbone.

    reward = w · pool(standardize(h))

Same backbone, layer, pooling, data, loss and trainer as SARM; the only difference is that the head
reads the hidden state itself instead of SAE features. It is the accuracy SARM has to match.
"""

from __future__ import annotations

from sarm.reward.module import RewardModelModule
from sarm.reward.network import DenseNetwork


class DenseRM(RewardModelModule):
    """Linear reward head on the standardized hidden state.

    Args:
        d_in: hidden size; default: read from the datamodule.
        **kwargs: the shared arguments of ``RewardModelModule`` (mode, pooling, lr, LoRA, export_dir, ...).
    """

    def __init__(self, d_in: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if d_in is not None:
            self.network = DenseNetwork(d_in, self.hparams.pooling)
            self.init_head()

    def build_network(self, hidden_size: int) -> DenseNetwork:
        return DenseNetwork(hidden_size, self.hparams.pooling)
