"""Reading the activation cache: token batches for SAE training, pair batches for SARM training."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import lightning as L
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sarm.data.cache import MANIFEST, PAIRS, SPLITS, read_manifest
from sarm.data.pairs import ResumableLoader, SplitDataModule, label_ids, subset_label, training_position
from sarm.errors import SarmInputError


SHARD_TENSORS = ("tokens", "token_seq", "token_pos", "last", "seq", "truncated")


class ActivationCache:
    """A complete cache directory written by ``sarm cache``.

    Readers hold O(pairs) bytes of bookkeeping (a split code, margin and subset id per pair, a shard
    location per sequence) and, for response tokens, at most ``resident_shards`` shards at a time:
    evaluation and attribution walk the pairs in order, so memory stays flat in the dataset's size.
    Shuffled training touches every shard in every batch and calls ``hold_all_shards`` instead.
    """

    def __init__(self, directory: str | Path, resident_shards: int = 4):
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).is_file():
            raise SarmInputError(f"{self.directory / MANIFEST}: no activation cache here (run `sarm cache` first, or "
                                 "it was interrupted)")
        self.manifest = read_manifest(self.directory)
        self.resident_shards: int | None = resident_shards
        self._last: torch.Tensor | None = None
        self._shards: OrderedDict[int, torch.Tensor] = OrderedDict()  # least recently used first

    @property
    def hidden_size(self) -> int:
        return self.manifest["hidden_size"]

    @cached_property
    def pairs(self) -> list[dict]:
        """Every row of ``pairs.jsonl``, texts included (for reports on a split, not for streaming)."""
        with open(self.directory / PAIRS) as f:
            return [json.loads(line) for line in f]

    @cached_property
    def columns(self) -> PairColumns:
        """The per-pair fields batches need, read in one streaming pass over ``pairs.jsonl``."""
        splits, margins, labels = [], [], []
        with open(self.directory / PAIRS) as f:
            for line in f:
                row = json.loads(line)
                splits.append(SPLITS.index(row["split"]))
                margins.append(row["margin"] or 0.0)
                labels.append(subset_label(row.get("meta") or {}))
        names, ids = label_ids(labels)
        return PairColumns(split=torch.tensor(splits, dtype=torch.uint8),
                           margin=torch.tensor(margins, dtype=torch.float32),
                           subset=torch.tensor(ids, dtype=torch.long), subset_names=names)

    def pair_indices(self, split: str) -> torch.Tensor:
        if split == "all":
            return torch.arange(self.manifest["num_pairs"])
        if split not in SPLITS:
            raise SarmInputError(f"split '{split}': expected one of {SPLITS + ('all',)}")
        return (self.columns.split == SPLITS.index(split)).nonzero().flatten()

    def pair_split_mask(self, split: str) -> torch.Tensor:
        mask = torch.zeros(self.manifest["num_pairs"], dtype=torch.bool)
        mask[self.pair_indices(split)] = True
        return mask

    def shard_paths(self) -> list[Path]:
        return [self.directory / shard["file"] for shard in self.manifest["shards"]]  # names checked on reading

    def load_shard(self, path: Path, *names: str) -> dict[str, torch.Tensor]:
        """Tensors ``names`` (default: all) of one shard, or a named error: missing, unreadable (truncated,
        not safetensors), a tensor missing or of the wrong shape or dtype for this cache."""
        names = names or SHARD_TENSORS
        try:
            with safe_open(path, framework="pt") as f:
                missing = [name for name in names if name not in f.keys()]
                if missing:
                    raise SarmInputError(f"{path}: field '{missing[0]}': missing (a shard of this cache holds "
                                         f"{', '.join(SHARD_TENSORS)})")
                tensors = {name: f.get_tensor(name) for name in names}
        except FileNotFoundError:
            raise SarmInputError(f"{path}: missing (the cache is incomplete; run `sarm cache` into a new "
                                 "directory)") from None
        except SafetensorError as err:
            raise SarmInputError(f"{path}: not a readable safetensors shard ({err}); run `sarm cache` into a new "
                                 "directory") from None
        d, dtype = self.hidden_size, getattr(torch, self.manifest["dtype"])
        for name in ("tokens", "last"):
            if name in tensors and (tensors[name].shape[1:] != (d,) or tensors[name].dtype != dtype):
                raise SarmInputError(f"{path}: field '{name}': {tensors[name].dtype} of shape "
                                     f"{list(tensors[name].shape)}, expected {dtype} of shape [?, {d}]")
        return tensors

    def last_token_activations(self) -> torch.Tensor:
        """``[num_sequences, d]`` last-token activations, row = sequence id.

        Read once (only those tensors of each shard) and kept: SAE training, its per-epoch coverage
        and SARM's pair batches all ask for them.
        """
        if self._last is None:
            out = torch.empty(self.manifest["num_sequences"], self.hidden_size,
                              dtype=getattr(torch, self.manifest["dtype"]))
            for path in self.shard_paths():
                shard = self.load_shard(path, "seq", "last")
                out[shard["seq"]] = shard["last"]
            self._last = out
        return self._last

    @cached_property
    def _locations(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sequence's response tokens: (shard number or −1, first row in that shard's tokens
        ordered by (sequence, position), count). Built from the shards' small index tensors only."""
        n = self.manifest["num_sequences"]
        shard, start, count = torch.full((n,), -1, dtype=torch.int32), torch.zeros(n, dtype=torch.long), \
            torch.zeros(n, dtype=torch.long)
        for s, path in enumerate(self.shard_paths()):
            seq = self.load_shard(path, "token_seq")["token_seq"].long()
            ids, counts = seq.unique(return_counts=True)  # sorted: the order _shard_tokens puts them in
            if (shard[ids] >= 0).any():
                raise SarmInputError(f"{path}: holds tokens of sequences another shard holds too; re-run `sarm cache`")
            shard[ids] = s
            count[ids] = counts
            start[ids] = counts.cumsum(0) - counts
        return shard, start, count

    def _shard_tokens(self, s: int) -> torch.Tensor:
        """Shard ``s``'s token activations ordered by (sequence, position), kept in a small LRU."""
        if s in self._shards:
            self._shards.move_to_end(s)
            return self._shards[s]
        shard = self.load_shard(self.shard_paths()[s], "token_seq", "token_pos", "tokens")
        seq, pos = shard["token_seq"].long(), shard["token_pos"].long()
        tokens = shard["tokens"][torch.argsort(seq * (int(pos.max()) + 1) + pos)]
        self._shards[s] = tokens
        while self.resident_shards is not None and len(self._shards) > self.resident_shards:
            self._shards.popitem(last=False)
        return tokens

    def hold_all_shards(self) -> None:
        """Keep every shard's tokens once read (shuffled training reads all of them every epoch)."""
        self.resident_shards = None

    def response_tokens(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([n, T, d], [n, T])``: the cached tokens of these sequences, right-padded, and their mask."""
        shard, start, count = (t[sequences] for t in self._locations)
        length = int(count.max()) if len(count) else 0
        positions = torch.arange(length)
        mask = positions[None] < count[:, None]
        hidden = torch.zeros(len(sequences), length, self.hidden_size, dtype=getattr(torch, self.manifest["dtype"]))
        for s in shard.unique().tolist():
            if s < 0:  # no response tokens cached (the pooling reports it)
                continue
            rows = (shard == s).nonzero().flatten()
            tokens = self._shard_tokens(s)
            gather = (start[rows, None] + positions[None]).clamp_max(len(tokens) - 1)
            hidden[rows] = tokens[gather] * mask[rows, :, None].to(tokens.dtype)
        return hidden, mask.long()


@dataclass
class PairColumns:
    """Per-pair fields of a cache, a few bytes each: split code (index into ``SPLITS``), margin
    (0 where the data gave none), subset id (index into ``subset_names``, −1 for none)."""

    split: torch.Tensor
    margin: torch.Tensor
    subset: torch.Tensor
    subset_names: list[str]


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

    def __init__(self, cache: ActivationCache, split: str, batch_size: int, shuffle: bool, buffer_shards: int,
                 seed: int, sequence_fraction: float = 0.0, rank: int = 0, world_size: int = 1, even: bool = False):
        self.cache, self.batch_size, self.shuffle, self.buffer_shards, self.seed = (
            cache, batch_size, shuffle, buffer_shards, seed)
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
            for batch in buffer[:full].split(self.batch_size):
                yield self._mix_in_sequences(batch, generator)
            leftover = buffer[full:]
        if leftover is not None and len(leftover):
            yield leftover


class TokenActivationDataModule(L.LightningDataModule):
    """Token activations from an activation cache, for SAE training.

    Args:
        cache_dir: a directory written by ``sarm cache``.
        batch_size: tokens per batch.
        buffer_shards: shards shuffled together (more = better mixing, more memory).
        seed: shuffling seed.
        sequence_fraction: share of each training batch drawn from last-token (sequence-level)
            activations, where the reward head reads; validation stays on token activations.
    """

    def __init__(self, cache_dir: str, batch_size: int = 4096, buffer_shards: int = 4, seed: int = 0,
                 sequence_fraction: float = 0.0):
        super().__init__()
        if not 0.0 <= sequence_fraction < 1.0:
            raise SarmInputError(f"data.sequence_fraction = {sequence_fraction}: expected a value in [0, 1)")
        self.cache_dir, self.batch_size, self.buffer_shards, self.seed = cache_dir, batch_size, buffer_shards, seed
        self.sequence_fraction = sequence_fraction

    @cached_property
    def cache(self) -> ActivationCache:
        return ActivationCache(self.cache_dir)

    @property
    def hidden_size(self) -> int:
        return self.cache.hidden_size

    def _loader(self, split: str, shuffle: bool, sequence_fraction: float = 0.0) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        stream = TokenStream(self.cache, split, self.batch_size, shuffle, self.buffer_shards, self.seed,
                             sequence_fraction, rank=rank, world_size=world, even=split == "train")
        if split == "train":  # the trainer's epoch seeds each pass; a resumed pass skips what was trained on
            return ResumableLoader(stream, batch_size=None, position=training_position(self))
        return DataLoader(stream, batch_size=None)

    def train_dataloader(self):
        return self._loader("train", shuffle=True, sequence_fraction=self.sequence_fraction)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)


class CachedPairs(Dataset):
    """The pairs of one split, as indices; ``collate`` turns a list of them into a batch."""

    def __init__(self, cache: ActivationCache, split: str):
        self.indices = cache.pair_indices(split)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return int(self.indices[i])


class PairActivationDataModule(SplitDataModule):
    """Cached activations of chosen/rejected pairs, for reward models whose backbone is frozen.

    Batches have the layout of ``sarm.data.pairs`` with hidden states in place of token ids: both
    sides stacked (rows [0, B) chosen, [B, 2B) rejected) as ``hidden`` ``[2B, T, d]`` with a
    response ``mask`` ``[2B, T]``; T = 1 (the last token) for ``pooling: last``, the longest
    response in the batch for ``pooling: mean``. Plus ``margin``, ``pair`` and ``subset`` per pair.

    Args:
        cache_dir: a directory written by ``sarm cache``.
        batch_size: pairs per batch.
        predict_split: the split ``predict`` (and ``sarm attribute``) runs on: train, val, test or all.
        pooling: ``last`` reads the cached last tokens; ``mean`` the cached response tokens (a cache
            written with ``tokens: response``).
    """

    yields_tokens = False

    def __init__(self, cache_dir: str, batch_size: int = 64, predict_split: str = "test", pooling: str = "last"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling = {pooling!r}: expected 'last' or 'mean'")
        self.cache_dir, self.batch_size, self.predict_split, self.pooling = cache_dir, batch_size, predict_split, pooling

    @cached_property
    def cache(self) -> ActivationCache:
        return ActivationCache(self.cache_dir)

    @property
    def hidden_size(self) -> int:
        return self.cache.hidden_size

    @property
    def backbone_settings(self) -> dict:
        manifest = self.cache.manifest
        return {"model": manifest["model"], "layer": manifest["layer"],
                "max_length": manifest["settings"]["max_length"]}

    @property
    def subsets(self) -> list[str]:
        return self.cache.columns.subset_names

    def collate(self, pairs: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(pairs, dtype=torch.long)
        sequences = torch.cat([2 * index, 2 * index + 1])
        if self.pooling == "last":
            hidden = self.cache.last_token_activations()[sequences].unsqueeze(1)
            mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        else:
            hidden, mask = self.cache.response_tokens(sequences)
        columns = self.cache.columns
        return {"hidden": hidden, "mask": mask, "margin": columns.margin[index], "pair": index,
                "subset": columns.subset[index]}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if self.pooling == "mean" and self.cache.manifest["settings"]["tokens"] != "response":
            raise SarmInputError(f"{self.cache_dir}: pooling 'mean' needs a cache of response tokens "
                                 f"(tokens: response); this one holds {self.cache.manifest['settings']['tokens']!r}")
        if shuffle:
            self.cache.hold_all_shards()  # random pairs from every shard in every batch
        return self.loader(CachedPairs(self.cache, split), split, shuffle, batch_size=self.batch_size,
                           collate_fn=self.collate)
