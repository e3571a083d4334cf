"""Preference pairs as token batches, for reward models that run the backbone (LoRA, joint, scoring).

A batch stacks both sides of each pair: rows [0, B) are the chosen sequences, [B, 2B) the rejected
ones, padded together (right or left) so one backbone pass serves the whole batch:

    input_ids, attention_mask   [2B, T]
    response_mask               [2B, T]   1 on the final assistant response (its last token included)
    margin, pair, subset        [B]       optional margin (0 if absent), pair index, subset id (−1: none)

Pairs are loaded, split by prompt and rendered exactly as ``sarm cache`` does (same
``split_by_prompt``, same ``render_response``), so a model trained on text batches and one trained
on cached activations see the same train/val/test pairs and the same tokens.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from functools import cached_property, partial
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from sarm.backbone import DEFAULT_BACKBONE, load_tokenizer, resolve_model
from sarm.data.preference import load_preferences
from sarm.data.render import RenderedSequence, render_response
from sarm.data.rows import PreferencePair
from sarm.data.splits import split_by_prompt

SUBSET_FIELDS = ("subset", "attribute")  # RewardBench's column; the planted data's deciding attribute


def subset_label(meta: dict) -> str | None:
    """The subset a pair belongs to, for per-subset accuracy: ``subset`` (else ``attribute``) column."""
    for field in SUBSET_FIELDS:
        if meta.get(field) not in (None, ""):
            return str(meta[field])
    return None


def subset_ids(metas: list[dict]) -> tuple[list[str], list[int]]:
    """(sorted subset names, each pair's index into them or −1)."""
    return label_ids([subset_label(meta) for meta in metas])


def label_ids(labels: list[str | None]) -> tuple[list[str], list[int]]:
    """(sorted distinct labels, each one's index into them or −1 for None)."""
    names = sorted({label for label in labels if label is not None})
    position = {name: i for i, name in enumerate(names)}
    return names, [position.get(label, -1) for label in labels]


def pad_sequences(sequences: list[RenderedSequence], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``response_mask`` of rendered sequences, padded on ``side``."""
    length = max(len(s.input_ids) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    response = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, s in enumerate(sequences):
        n = len(s.input_ids)
        start = length - n if side == "left" else 0
        ids[row, start : start + n] = torch.tensor(s.input_ids)
        attention[row, start : start + n] = 1
        response[row, start + s.response_start : start + n] = 1
    return {"input_ids": ids, "attention_mask": attention, "response_mask": response}


class RenderedPairs(Dataset):
    """The pairs of one split, rendered on access (token ids are never all held at once)."""

    def __init__(self, pairs: list[PreferencePair], indices: list[int], subsets: list[int], tokenizer, max_length: int):
        self.pairs, self.indices, self.subsets = pairs, indices, subsets
        self.tokenizer, self.max_length = tokenizer, max_length

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        pair = self.pairs[i]
        return {
            "chosen": render_response(self.tokenizer, pair.prompt, pair.chosen, self.max_length),
            "rejected": render_response(self.tokenizer, pair.prompt, pair.rejected, self.max_length),
            "margin": 0.0 if pair.margin is None else float(pair.margin),
            "pair": self.indices[i],
            "subset": self.subsets[i],
        }


def collate_pairs(items: list[dict], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    batch = pad_sequences([it["chosen"] for it in items] + [it["rejected"] for it in items], pad_id, side)
    for key, dtype in (("margin", torch.float32), ("pair", torch.long), ("subset", torch.long)):
        batch[key] = torch.tensor([it[key] for it in items], dtype=dtype)
    return batch


class EpochShuffle(DistributedSampler):
    """The training order: a permutation drawn from ``seed + epoch`` alone, and this rank's share of it.

    Not from the global RNG, which checkpoints do not hold: a resumed run draws the same order again.
    Being a ``DistributedSampler``, it is left in place under DDP and shares the pairs out as
    Lightning's own sampler would (rank r takes every world_size-th index of the permutation, the
    last few repeated to even the shares).
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._skip = 0

    def begin(self, epoch: int, skip: int = 0) -> None:
        """Make the next pass epoch ``epoch``'s, without its first ``skip`` indices."""
        self.set_epoch(epoch)
        self._skip = skip

    def __iter__(self):
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableLoader(DataLoader):
    """A training DataLoader that starts each pass where the trainer stands: the right epoch's order,
    without the batches of it already trained on.

    ``position()`` is asked as the first batch of a pass is: (epoch, batches of it done). Resuming
    from a step checkpoint, that is the epoch it was written in and the batches trained on before
    it; otherwise the epoch and 0. The source, the ``sampler`` or an iterable ``dataset``, draws
    the epoch's order and leaves those batches out through ``begin(epoch, skip)``.

    The position is the trainer's own progress (which checkpoints hold), not a loader state
    restored through Lightning's ``load_state_dict``: Lightning drops loader states when
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (Lightning issue #20550),
    as ``SAEModule`` does.

    Args:
        position: (epoch, batches done) where a pass starts; without it, pass n is epoch n, from its start.
    """

    def __init__(self, *args, position: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.position = position
        self._passes = 0

    @property
    def source(self):
        return self.dataset if isinstance(self.dataset, IterableDataset) else self.sampler

    def __iter__(self):
        # A generator: nothing below runs before the loop asks for the first batch, by when the
        # trainer has set its progress for this epoch (fresh or restored).
        epoch, done = self.position() if self.position is not None else (self._passes, 0)
        self._passes += 1
        # An iterable dataset yields whole batches (batch_size None); a sampler yields indices.
        self.source.begin(epoch, skip=done * (self.batch_size or 1))
        yield from super().__iter__()


def training_position(datamodule: L.LightningDataModule) -> Callable[[], tuple[int, int]] | None:
    """The fitting trainer's (epoch, batches of it done), read when called; None without a trainer.

    Lightning's count: the fit loop restores it from a checkpoint and numbers the next batch from
    it; a new epoch starts it at 0.
    """
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return None
    return lambda: (trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready)


class SplitDataModule(L.LightningDataModule):
    """The four loaders of a by-prompt split; subclasses define ``_loader(split, shuffle)`` (built
    with ``loader``, which picks the sampler) and ``predict_split``."""

    predict_split = "test"

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        raise NotImplementedError

    def loader(self, dataset: Dataset, split: str, shuffle: bool, **kwargs) -> DataLoader:
        """Shuffled (training): a ``ResumableLoader`` over ``train_sampler``; else over ``eval_sampler``."""
        if shuffle:
            return ResumableLoader(
                dataset, sampler=self.train_sampler(dataset), position=training_position(self), **kwargs
            )
        return DataLoader(dataset, sampler=self.eval_sampler(dataset, split), **kwargs)

    def train_sampler(self, dataset: Dataset) -> EpochShuffle:
        """Each epoch a permutation from the run's seed and the epoch; under DDP each rank its share.

        The seed is the run's (``seed_everything``), the one Lightning's own distributed sampler takes.
        """
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return EpochShuffle(dataset, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), num_replicas=world, rank=rank)

    def eval_sampler(self, dataset: Dataset, split: str):
        """Under several processes, evaluation splits are shared out without repeats.

        Lightning's default DistributedSampler pads each rank's share by repeating pairs, which
        would count them twice in accuracies and attribution sums; ranks here may differ by one batch.
        """
        trainer = getattr(self, "trainer", None)
        if split == "train" or trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        return self._loader(self.predict_split)


class PairTextDataModule(SplitDataModule):
    """Tokenized preference pairs, split by prompt.

    Args:
        data: a preference file (.jsonl/.json/.parquet/.csv, optionally .gz), a ``datasets`` directory,
            ``builtin:planted`` or a hub dataset.
        num_pairs: pairs to generate, for ``builtin:planted``.
        seed: generator seed, for ``builtin:planted``.
        hf_split: the split to read, for a hub dataset or a ``datasets`` directory holding several.
        bad_rows: ``error`` (every bad row is named, then the run stops) or ``skip`` (left out and counted;
            ``sarm cache --bad_rows skip`` also lists them in a file).
        model: backbone whose tokenizer and chat template render the pairs.
        layer: backbone layer the reward model reads (default: half the depth).
        max_length: longer sequences lose tokens from the left, so the response's end survives.
        split_fractions: train/val/test fractions, assigned by prompt.
        split_seed: seed of the split.
        batch_size: pairs per batch (each batch holds twice as many sequences).
        padding_side: ``right`` or ``left``; rewards do not depend on it.
        predict_split: the split ``predict`` runs on: train, val, test or all.
        num_workers: DataLoader workers rendering pairs.
    """

    yields_tokens = True

    def __init__(
        self,
        data: str,
        num_pairs: int = 2000,
        seed: int = 0,
        hf_split: str = "train",
        bad_rows: Literal["error", "skip"] = "error",
        model: str = DEFAULT_BACKBONE,
        layer: int | None = None,
        max_length: int = 512,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        batch_size: int = 8,
        padding_side: str = "right",
        predict_split: str = "test",
        num_workers: int = 0,
    ):
        super().__init__()
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side = {padding_side!r}: expected 'right' or 'left'")
        self.save_hyperparameters()
        self.predict_split = predict_split

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.hparams.model)

    @cached_property
    def pairs(self) -> list[PreferencePair]:
        h = self.hparams
        return load_preferences(h.data, num_pairs=h.num_pairs, seed=h.seed, hf_split=h.hf_split, bad_rows=h.bad_rows)

    @cached_property
    def splits(self) -> dict[str, list[int]]:
        """Pair indices (into ``pairs``) of each split."""
        index = {id(pair): i for i, pair in enumerate(self.pairs)}
        parts = split_by_prompt(self.pairs, tuple(self.hparams.split_fractions), self.hparams.split_seed)
        return {name: [index[id(pair)] for pair in members] for name, members in parts.items()} | {
            "all": list(range(len(self.pairs)))
        }

    @cached_property
    def _subsets(self) -> tuple[list[str], list[int]]:
        return subset_ids([pair.meta for pair in self.pairs])

    @property
    def subsets(self) -> list[str]:
        return self._subsets[0]

    @cached_property
    def model_config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolve_model(self.hparams.model))

    @property
    def hidden_size(self) -> int:
        return self.model_config.hidden_size

    @property
    def backbone_settings(self) -> dict:
        layer = self.hparams.layer or self.model_config.num_hidden_layers // 2
        return {"model": self.hparams.model, "layer": layer, "max_length": self.hparams.max_length}

    def take_pooling(self, pooling: str) -> None:
        """Any pooling is served: text batches hold every token and the response mask, and the model pools
        (``sarm.reward.data.RewardData``)."""

    def dataset(self, split: str) -> RenderedPairs:
        if split not in self.splits:
            raise ValueError(f"split = {split!r}: expected train, val, test or all")
        indices = self.splits[split]
        return RenderedPairs(
            [self.pairs[i] for i in indices],
            indices,
            [self._subsets[1][i] for i in indices],
            self.tokenizer,
            self.hparams.max_length,
        )

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        collate = partial(collate_pairs, pad_id=self.tokenizer.pad_token_id, side=self.hparams.padding_side)
        dataset = self.dataset(split)
        return self.loader(
            dataset,
            split,
            shuffle,
            batch_size=self.hparams.batch_size,
            collate_fn=collate,
            num_workers=self.hparams.num_workers,
        )
