"""What a reward model reads from its data module: ``RewardData``, declared once.

``sarm.cache.PairActivationDataModule`` (cached hidden states, mode ``head``) and
``sarm.data.pairs.PairTextDataModule`` (token batches, any mode) provide it. The reward module reads
these members and nothing else, in ``setup`` (before any loader is built); a data module lacking one
is refused there, naming what it lacks.

Pooling lives on the model: ``setup`` hands it to the data (``take_pooling``), so cached batches hold
the last token or the whole response as the model reads them, and a data module declared for the
other pooling is refused instead of training a head on one and exporting the other.
"""

from __future__ import annotations

from typing import Protocol

from sarm.contract import missing_members, protocol_members
from sarm.errors import SarmInputError
from sarm.reward.pooling import Pooling


class RewardData(Protocol):
    """The data-module side of the reward model's contract."""

    yields_tokens: bool
    """Batches hold token ids (the backbone runs) rather than cached hidden states."""

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's hidden states at the layer read."""

    @property
    def backbone_settings(self) -> dict:
        """Where the hidden states come from: ``model`` (id or path), ``layer``, ``max_length``."""

    @property
    def subsets(self) -> list[str]:
        """Names of the subsets batches' ``subset`` ids index (for per-subset test accuracy); may be empty."""

    def take_pooling(self, pooling: Pooling) -> None:
        """Serve a model that pools this way (``last`` or ``mean``); refuse if the data was declared otherwise."""


MEMBERS = protocol_members(RewardData)


def reward_data(datamodule) -> RewardData:
    """``datamodule``, once it provides every member of ``RewardData`` (looked up without evaluating
    properties, which may read a cache or a model config); else a ``SarmInputError`` naming what lacks."""
    if datamodule is None:
        raise SarmInputError(
            "a reward model reads its data through a data module (sarm.cache.PairActivationDataModule"
            " or sarm.data.pairs.PairTextDataModule); none was given"
        )
    missing = missing_members(datamodule, RewardData)
    if missing:
        raise SarmInputError(
            f"{type(datamodule).__name__} is not a reward model's data module: it lacks "
            f"{', '.join(missing)} (sarm.reward.data.RewardData: {', '.join(MEMBERS)})"
        )
    return datamodule
