"""The cache as training data: token batches for SAE training, pair batches for SARM training.

Each data module hands its model what the model reads from data, and nothing else: the hidden size
and the cache's provenance (``backbone_settings``: model, layer, max_length) to both; the planted
labels of a split to ``PlantedCoverage`` (``TokenActivationDataModule.planted``); to reward models,
``sarm.reward.data.RewardData``, through which the model also hands over its pooling.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sarm.cache.reader import ActivationCache
from sarm.data.pairs import ResumableLoader, SplitDataModule, training_position
from sarm.errors import SarmInputError
from sarm.sae.coverage import planted_labels


class CacheBacked:
    """What both cache DataModules hand their model: the cache at ``cache_dir``, its width and provenance."""

    cache_dir: str

    @cached_property
    def cache(self) -> ActivationCache:
        return ActivationCache(self.cache_dir)

    @property
    def hidden_size(self) -> int:
        return self.cache.hidden_size

    @property
    def backbone_settings(self) -> dict:
        """Where a cache's activations came from: ``model``, ``layer``, ``max_length`` and ``compute_dtype`` of its
        manifest (an exported model scores text computing as its training data was computed)."""
        manifest = self.cache.manifest
        return {
            "model": manifest["model"],
            "layer": manifest["layer"],
            "max_length": manifest["settings"]["max_length"],
            "compute_dtype": manifest["settings"]["compute_dtype"],
        }


class TokenStream(IterableDataset):
    """Shuffled batches of token activations from one split, streamed shard by shard.

    Each pass visits the shards in a new random order and shuffles within a buffer of
    ``buffer_shards`` shards, so memory stays at a few shards whatever the cache's size.
    With ``sequence_fraction`` > 0, that share of each batch is drawn from the split's last-token
    activations instead: the reward head reads only those, and they are rare among token
    activations (the SARM paper's "sequence-level" SAE training).

    A pass is drawn from ``seed + epoch`` alone. Pass n is epoch n unless ``begin`` says otherwise
    (``ResumableLoader`` passes the trainer's epoch, and on resuming the batches to leave out).
    """

    def __init__(
        self,
        cache: ActivationCache,
        split: str,
        batch_size: int,
        shuffle: bool,
        buffer_shards: int,
        seed: int,
        sequence_fraction: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
    ):
        self.cache, self.batch_size, self.shuffle, self.buffer_shards, self.seed = (
            cache,
            batch_size,
            shuffle,
            buffer_shards,
            seed,
        )
        # Under DDP every rank draws the same stream (same seed) and keeps every world_size-th batch;
        # ``even`` (training) drops the last few so that all ranks step the same number of times.
        self.rank, self.world_size, self.even = rank, world_size, even
        self.sequence_rows = int(round(batch_size * sequence_fraction))
        if self.sequence_rows:
            pairs = cache.pair_indices(split)
            self.last = cache.last_token_activations()[torch.cat([2 * pairs, 2 * pairs + 1])]
        self.in_split = cache.pair_split_mask(split)
        self.num_tokens = sum(s["split_tokens"][split] for s in cache.manifest["shards"])
        self.epoch, self._skip = 0, 0

    def begin(self, epoch: int, skip: int = 0) -> None:
        """Make the next pass epoch ``epoch``'s, without this rank's first ``skip`` batches."""
        self.epoch, self._skip = epoch, skip

    def __len__(self) -> int:
        """This rank's batches per pass (a partial batch is carried over to the next buffer, never dropped)."""
        total = -(-self.num_tokens // self.batch_size)
        if self.even:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))

    def __iter__(self):
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        limit = len(self)
        mine = (batch for i, batch in enumerate(self._batches(epoch)) if i % self.world_size == self.rank)
        for count, batch in enumerate(mine):
            if count == limit:
                return
            # Skipped batches are still drawn: the shuffles and the sequence rows of later batches
            # come from the same generator, which must be where an uninterrupted pass leaves it.
            if count >= skip:
                yield batch

    def _mix_in_sequences(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.sequence_rows:
            return batch
        rows = torch.randint(0, len(self.last), (self.sequence_rows,), generator=generator)
        return torch.cat([batch[self.sequence_rows :], self.last[rows]])

    def _shard_tokens(self, path: Path) -> torch.Tensor:
        shard = self.cache.load_shard(path)
        return shard["tokens"][self.in_split[shard["token_seq"] // 2]]

    def _batches(self, epoch: int):
        """All batches of epoch ``epoch``'s pass, the same sequence on every rank."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        paths = self.cache.shard_paths()
        if self.shuffle:
            paths = [paths[i] for i in torch.randperm(len(paths), generator=generator)]
        leftover = None
        for start in range(0, len(paths), self.buffer_shards):
            parts = [self._shard_tokens(p) for p in paths[start : start + self.buffer_shards]]
            buffer = torch.cat(([leftover] if leftover is not None else []) + parts)
            if self.shuffle:
                buffer = buffer[torch.randperm(len(buffer), generator=generator)]
            full = len(buffer) - len(buffer) % self.batch_size
            # Not buffer[:0].split(...): splitting an empty tensor gives one empty batch, which counted as a pass's
            # only batch of a split smaller than a batch (its tokens never seen, its metrics NaN).
            for batch in buffer[:full].split(self.batch_size) if full else ():
                yield self._mix_in_sequences(batch, generator)
            leftover = buffer[full:]
        if leftover is not None and len(leftover):
            yield leftover


class TokenActivationDataModule(CacheBacked, L.LightningDataModule):
    """Token activations from an activation cache, for SAE training.

    Args:
        cache_dir: a directory written by ``sarm cache``.
        batch_size: tokens per batch.
        buffer_shards: shards shuffled together (more = better mixing, more memory).
        seed: shuffling seed.
        sequence_fraction: share of each training batch drawn from last-token (sequence-level)
            activations, where the reward head reads; validation stays on token activations.
    """

    def __init__(
        self,
        cache_dir: str,
        batch_size: int = 4096,
        buffer_shards: int = 4,
        seed: int = 0,
        sequence_fraction: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= sequence_fraction < 1.0:
            raise SarmInputError(f"data.sequence_fraction = {sequence_fraction}: expected a value in [0, 1)")
        self.cache_dir, self.batch_size, self.buffer_shards, self.seed = cache_dir, batch_size, buffer_shards, seed
        self.sequence_fraction = sequence_fraction

    def planted(self, split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """The sequences of ``split`` as (last-token activations ``[N, d]``, planted-attribute labels
        ``{property: bool [N]}``, see ``sarm.sae.coverage``); None when no pair carries a planted attribute."""
        pairs = self.cache.pairs
        if not any((p.get("meta") or {}).get("attribute") for p in pairs):
            return None
        index = self.cache.pair_indices(split)
        sequences = torch.cat([2 * index, 2 * index + 1])  # the chosen, then the rejected side of each pair
        labels = {name: label[sequences] for name, label in planted_labels(pairs).items()}
        return self.cache.last_token_activations()[sequences], labels

    def _loader(self, split: str, shuffle: bool, sequence_fraction: float = 0.0) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        stream = TokenStream(
            self.cache,
            split,
            self.batch_size,
            shuffle,
            self.buffer_shards,
            self.seed,
            sequence_fraction,
            rank=rank,
            world_size=world,
            even=split == "train",
        )
        if split == "train":  # the trainer's epoch seeds each pass; a resumed pass skips what was trained on
            return ResumableLoader(stream, batch_size=None, position=training_position(self))
        return DataLoader(stream, batch_size=None)

    def train_dataloader(self):
        return self._loader("train", shuffle=True, sequence_fraction=self.sequence_fraction)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)


# Pooled features kept in memory for a head's epochs at most (a cache of 100k pairs at 4,096 features: 3.3 GB).
POOLED_BYTES = 2 << 30


class CachedPairs(Dataset):
    """The pairs of one split, as indices; ``collate`` turns a list of them into a batch."""

    def __init__(self, cache: ActivationCache, split: str):
        self.indices = cache.pair_indices(split)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return int(self.indices[i])


class PairActivationDataModule(CacheBacked, SplitDataModule):
    """Cached activations of chosen/rejected pairs, for reward models whose backbone is frozen.

    Batches have the layout of ``sarm.data.pairs`` with hidden states in place of token ids: both
    sides stacked (rows [0, B) chosen, [B, 2B) rejected) as ``hidden`` ``[2B, T, d]`` with a
    response ``mask`` ``[2B, T]``; T = 1 (the last token) for ``pooling: last``, the longest
    response in the batch for ``pooling: mean``. Plus ``margin``, ``pair`` and ``subset`` per pair. While a
    head-only model trains, ``serve_pooled`` replaces ``hidden`` and ``mask`` by the pooled ``features`` [2B, n].

    Args:
        cache_dir: a directory written by ``sarm cache``.
        batch_size: pairs per batch.
        predict_split: the split ``predict`` (and ``sarm attribute``) runs on: train, val, test or all.
        pooling: leave unset under a reward model: the model hands its own over in ``setup``
            (``take_pooling``). ``last`` reads the cached last tokens, ``mean`` the cached response
            tokens (a cache written with ``tokens: response``). Set, it is a requirement: a model that
            pools otherwise is refused. Unset and never told, the loaders serve ``last``.
    """

    yields_tokens = False

    def __init__(
        self,
        cache_dir: str,
        batch_size: int = 64,
        predict_split: str = "test",
        pooling: Literal["last", "mean"] | None = None,
    ):
        super().__init__()
        if pooling not in ("last", "mean", None):
            raise SarmInputError(f"data.pooling = {pooling!r}: expected 'last' or 'mean' (or unset: the model's)")
        self.cache_dir, self.batch_size, self.predict_split = cache_dir, batch_size, predict_split
        self.declared_pooling, self.model_pooling = pooling, None
        self.pooled: torch.Tensor | None = None  # [sequences, width] features served instead of hidden states
        self.pooled_pairs: torch.Tensor | None = None  # [pairs] bool: the pairs whose features ``pooled`` holds

    @property
    def pooling(self) -> str:
        """What batches are built for: the model's pooling, else the declared one, else ``last``."""
        return self.model_pooling or self.declared_pooling or "last"

    def take_pooling(self, pooling: str) -> None:
        """Serve a model that pools this way (``RewardData``); a different declared pooling is refused."""
        if self.declared_pooling not in (None, pooling):
            raise SarmInputError(
                f"model.pooling is '{pooling}' but data.pooling is '{self.declared_pooling}': the "
                "model decides where its reward is read and hands that to its data; leave "
                f"data.pooling unset (or set it to '{pooling}')"
            )
        self.model_pooling = pooling

    @property
    def subsets(self) -> list[str]:
        return self.cache.columns.subset_names

    def serve_pooled(self, pool, width: int, splits: tuple[str, ...], max_bytes: int = POOLED_BYTES) -> bool:
        """From now on, batches of ``splits`` carry ``features`` ``[2B, width]`` (rows as ``hidden``'s) in place of
        ``hidden`` and ``mask``: ``pool(split)`` = ``(chosen, rejected)`` ``[P_split, width]``, a frozen network's
        pooled features of every pair of the split in its order (``sarm.reward.fit.pooled_features``), called
        here once per split and kept in memory.

        Why: a head-only reward model over a frozen SAE reads the same pooled features every epoch; encoding each
        response token through the SAE once instead of once per epoch is what makes its epochs cheap. The features
        must not change while they are served (a frozen SAE; nothing the optimizer moves). Returns False, and
        serves hidden states as before, when they would take more than ``max_bytes``.
        """
        sequences = 2 * int(self.cache.columns.margin.numel())
        if sequences * width * 4 > max_bytes:
            return False
        pooled, pooled_pairs = torch.zeros(sequences, width), torch.zeros(sequences // 2, dtype=torch.bool)
        for split in splits:
            index = self.cache.pair_indices(split)
            pooled[2 * index], pooled[2 * index + 1] = pool(split)
            pooled_pairs[index] = True
        self.pooled, self.pooled_pairs = pooled, pooled_pairs
        return True

    def stop_serving_pooled(self) -> None:
        """Back to hidden states (``serve_pooled``'s features are only good while the network stays frozen)."""
        self.pooled = self.pooled_pairs = None

    def collate(self, pairs: list[int]) -> dict[str, torch.Tensor]:
        """A batch of ``pairs``: their hidden states (``hidden_batch``), or their pooled features once
        ``serve_pooled`` has made them."""
        index = torch.tensor(pairs, dtype=torch.long)
        if self.pooled is None or not self.pooled_pairs[index].all():  # a split that was not pooled
            return self.hidden_batch(pairs)
        columns = self.cache.columns
        return {
            "features": self.pooled[torch.cat([2 * index, 2 * index + 1])],
            "margin": columns.margin[index],
            "pair": index,
            "subset": columns.subset[index],
        }

    def hidden_batch(self, pairs: list[int]) -> dict[str, torch.Tensor]:
        """The hidden states of ``pairs``, both sides stacked, as the class docstring lays them out."""
        index = torch.tensor(pairs, dtype=torch.long)
        sequences = torch.cat([2 * index, 2 * index + 1])
        if self.pooling == "last":
            hidden = self.cache.last_token_activations()[sequences].unsqueeze(1)
            mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        else:
            hidden, mask = self.cache.response_tokens(sequences)
        columns = self.cache.columns
        return {
            "hidden": hidden,
            "mask": mask,
            "margin": columns.margin[index],
            "pair": index,
            "subset": columns.subset[index],
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if self.pooling == "mean" and self.cache.manifest["settings"]["tokens"] != "response":
            raise SarmInputError(
                f"{self.cache_dir}: pooling 'mean' needs a cache of response tokens "
                f"(tokens: response); this one holds {self.cache.manifest['settings']['tokens']!r}"
            )
        if shuffle:
            self.cache.hold_all_shards()  # random pairs from every shard in every batch
        return self.loader(
            CachedPairs(self.cache, split), split, shuffle, batch_size=self.batch_size, collate_fn=self.collate
        )
