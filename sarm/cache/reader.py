"""Reading a complete activation cache: its manifest, per-pair columns and shards."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sarm.cache.layout import MANIFEST, PAIRS, SHARD_TENSORS, SPLITS, read_manifest
from sarm.data.pairs import label_ids, subset_label
from sarm.errors import SarmInputError


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
            raise SarmInputError(
                f"{self.directory / MANIFEST}: no activation cache here (run `sarm cache` first, or it was interrupted)"
            )
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
        return PairColumns(
            split=torch.tensor(splits, dtype=torch.uint8),
            margin=torch.tensor(margins, dtype=torch.float32),
            subset=torch.tensor(ids, dtype=torch.long),
            subset_names=names,
        )

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
                    raise SarmInputError(
                        f"{path}: field '{missing[0]}': missing (a shard of this cache holds "
                        f"{', '.join(SHARD_TENSORS)})"
                    )
                tensors = {name: f.get_tensor(name) for name in names}
        except FileNotFoundError:
            raise SarmInputError(
                f"{path}: missing (the cache is incomplete; run `sarm cache` into a new directory)"
            ) from None
        except SafetensorError as err:
            raise SarmInputError(
                f"{path}: not a readable safetensors shard ({err}); run `sarm cache` into a new directory"
            ) from None
        d, dtype = self.hidden_size, getattr(torch, self.manifest["dtype"])
        for name in ("tokens", "last"):
            if name in tensors and (tensors[name].shape[1:] != (d,) or tensors[name].dtype != dtype):
                raise SarmInputError(
                    f"{path}: field '{name}': {tensors[name].dtype} of shape "
                    f"{list(tensors[name].shape)}, expected {dtype} of shape [?, {d}]"
                )
        return tensors

    def last_token_activations(self) -> torch.Tensor:
        """``[num_sequences, d]`` last-token activations, row = sequence id.

        Read once (only those tensors of each shard) and kept: SAE training, its per-epoch coverage
        and SARM's pair batches all ask for them.
        """
        if self._last is None:
            out = torch.empty(
                self.manifest["num_sequences"], self.hidden_size, dtype=getattr(torch, self.manifest["dtype"])
            )
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
        shard, start, count = (
            torch.full((n,), -1, dtype=torch.int32),
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, dtype=torch.long),
        )
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
