"""``sarm cache``: hidden states of the truncated backbone, written once, read many times.

Lightning's predict loop runs the backbone over a preference dataset (both sides of every pair) and
writes, per sequence, the activations of its response tokens (or of all its tokens) and of its last
token, into safetensors shards of bounded size (the layout: ``sarm.cache.layout``). Re-running with
the same inputs reuses the cache. Memory stays bounded by one shard plus one batch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from sarm.backbone import TruncatedBackbone, cache_root, load_tokenizer
from sarm.cache.layout import (
    FORMAT_VERSION,
    MANIFEST,
    PAIRS,
    PARTIAL_MARK,
    SKIPPED,
    SPLITS,
    exclusive,
    partial_directory,
    read_manifest,
    start_partial,
)
from sarm.cache.sequences import RenderedSequences, collate_right_padded
from sarm.cache.settings import CacheSettings
from sarm.callbacks.stop_on_signal import StopOnSignal
from sarm.data.preference import iter_preferences
from sarm.data.rows import PreferencePair
from sarm.data.splits import assign_splits
from sarm.errors import SarmInputError
from sarm.io import atomic_path, save_tensors, write_json


class PackedTexts:
    """Every pair of a dataset, packed into one buffer as it is read (its ``pairs.jsonl`` fields as
    JSON, by offset): a few bytes of overhead per pair instead of a Python object per message, so a
    large dataset costs little memory, and never a list of all its pairs at once.
    """

    def __init__(self, pairs: Iterable[PreferencePair]):
        packed, offsets, self.prompt_ids = bytearray(), [0], []
        for pair in pairs:
            packed += json.dumps(_pair_fields(pair)).encode()
            offsets.append(len(packed))
            self.prompt_ids.append(pair.prompt_id)
        self.packed, self.offsets = packed, torch.tensor(offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, pair: int) -> dict:
        """The ``pairs.jsonl`` fields of pair number ``pair``, but its index and split."""
        return json.loads(self.packed[int(self.offsets[pair]) : int(self.offsets[pair + 1])])


class BackboneEncoder(L.LightningModule):
    """Predict-only module: a batch of sequences → their cached activations (on CPU)."""

    def __init__(self, backbone: TruncatedBackbone, tokens: str, dtype: torch.dtype):
        super().__init__()
        self.backbone, self.tokens, self.store_dtype = backbone, tokens, dtype

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        hidden = self.backbone(batch["input_ids"], batch["attention_mask"])
        ends = batch["length"] - 1
        starts = batch["response_start"] if self.tokens == "response" else torch.zeros_like(ends)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        keep = (positions[None] >= starts[:, None]) & (positions[None] <= ends[:, None])
        rows, cols = keep.nonzero(as_tuple=True)
        return {
            "tokens": hidden[rows, cols].to(self.store_dtype).cpu(),
            "token_seq": batch["seq"][rows].cpu(),
            "token_pos": cols.to(torch.int32).cpu(),
            "last": hidden[torch.arange(hidden.shape[0], device=hidden.device), ends].to(self.store_dtype).cpu(),
            "seq": batch["seq"].cpu(),
            "truncated": batch["truncated"].cpu(),
        }


class ShardWriter(BasePredictionWriter):
    """Buffers predicted activations and writes a shard whenever ``shard_tokens`` are buffered."""

    def __init__(self, directory: Path, shard_tokens: int, pair_splits: list[str]):
        super().__init__(write_interval="batch")
        self.directory, self.shard_tokens, self.pair_splits = directory, shard_tokens, pair_splits
        self.buffer: list[dict] = []
        self.buffered = 0
        self.shards: list[dict] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.buffer.append(prediction)
        self.buffered += prediction["tokens"].shape[0]
        if self.buffered >= self.shard_tokens:
            self.flush(trainer.global_rank)

    def on_predict_end(self, trainer, pl_module):
        self.flush(trainer.global_rank)

    def flush(self, rank: int) -> None:
        if not self.buffer:
            return
        shard = {key: torch.cat([b[key] for b in self.buffer]) for key in self.buffer[0]}
        name = f"shard-r{rank}-{len(self.shards):05d}.safetensors"
        save_tensors(self.directory / name, shard)
        # Per-split token counts let readers know their epoch length without opening the shards.
        split_tokens = {name: 0 for name in SPLITS}
        for pair, count in zip(*(shard["token_seq"] // 2).unique(return_counts=True)):
            split_tokens[self.pair_splits[pair]] += int(count)
        self.shards.append(
            {
                "file": name,
                "num_tokens": len(shard["tokens"]),
                "num_sequences": len(shard["seq"]),
                "truncated": int(shard["truncated"].sum()),
                "split_tokens": split_tokens,
            }
        )
        self.buffer, self.buffered = [], 0


def _pair_fields(pair: PreferencePair) -> dict:
    return {
        "prompt_id": pair.prompt_id,
        "margin": pair.margin,
        "origin": pair.origin,
        "prompt": pair.prompt,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "meta": pair.meta,
    }


def _gather_shards(trainer: L.Trainer, shards: list[dict]) -> list[dict]:
    """Every rank's shard records, in rank order (each rank wrote its own ``shard-r<rank>-*`` files)."""
    if trainer.world_size == 1:
        return shards
    gathered: list[list[dict] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, shards)
    # The command ends here for every rank: take the process group down together, rather than
    # leave gloo's threads to the interpreter's exit (which can abort a rank: "terminate called").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return [shard for rank_shards in gathered for shard in rank_shards]


def check_reusable(directory: Path, manifest: dict, settings: CacheSettings, fingerprint: str) -> None:
    """Refuse a complete cache of other settings, naming the ones that differ."""
    if manifest["fingerprint"] == fingerprint:
        return
    asked = json.loads(json.dumps(asdict(settings)))  # as the manifest holds them (tuples become lists)
    differ = [
        f"{key} {manifest['settings'].get(key)!r} there, {value!r} asked"
        for key, value in asked.items()
        if manifest["settings"].get(key) != value and key in manifest["settings"]
    ]
    what = "; ".join(differ) if differ else f"the data ({settings.data}) changed since it was cached"
    raise SarmInputError(
        f"{directory}: holds an activation cache of other data or settings ({what}); "
        "choose another output directory or delete this one"
    )


def cache_activations(
    settings: CacheSettings,
    output: str | None = None,
    batch_size: int = 16,
    shard_tokens: int = 65536,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """Run the truncated backbone over a preference dataset and cache its activations.

    A complete cache of the same settings is reused. Returns the cache directory.

    Args:
        settings: what to cache (see ``CacheSettings``).
        output: cache directory; default ``$SARM_CACHE/activations/<fingerprint>``.
        batch_size: sequences per forward pass.
        shard_tokens: token activations per shard file (bounds memory while writing and reading).
        accelerator: Lightning accelerator for the forward passes.
        devices: Lightning devices; with several (``strategy: ddp``), each rank encodes its share of
            the sequences (none repeated) and writes its own shards; rank 0 writes the one manifest.
        strategy: Lightning strategy (``auto``, ``ddp``).
        trust_remote_code: let a hub model run its own code.
    """
    fingerprint = settings.fingerprint()
    directory = Path(output) if output else cache_root() / "activations" / fingerprint[:16]
    run = {
        "batch_size": batch_size,
        "shard_tokens": shard_tokens,
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "trust_remote_code": trust_remote_code,
    }
    if not _first_process():
        # Under DDP, Lightning starts the other ranks by re-running this command; the first process
        # holds the lock and the build directory they all write into.
        return _build(settings, fingerprint, directory, **run)
    with exclusive(directory):
        manifest = read_manifest(directory)
        if manifest is not None:
            check_reusable(directory, manifest, settings, fingerprint)
            print(f"sarm: reusing activation cache {directory} ({manifest['num_tokens']:,} tokens)", flush=True)
            return directory
        return _build(settings, fingerprint, directory, **run)


def _first_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _build(settings: CacheSettings, fingerprint: str, directory: Path, **run) -> Path:
    """Cache into the build directory and rename it to ``directory`` once complete; on any failure (or a
    stop) the build directory goes, so nothing half-written is left for a later run to trust."""
    # Read and validate all the data before anything is written.
    skipped: list[dict] = []
    texts = PackedTexts(
        iter_preferences(
            settings.data,
            num_pairs=settings.num_pairs,
            seed=settings.seed,
            hf_split=settings.hf_split,
            bad_rows=settings.bad_rows,
            skipped=skipped,
        )
    )
    pair_splits = assign_splits(texts.prompt_ids, settings.split_fractions, settings.split_seed)
    build_dir = partial_directory(directory)
    first = _first_process()
    try:
        if first:
            start_partial(build_dir)
            with atomic_path(build_dir / PAIRS) as tmp, open(tmp, "w") as f:  # line by line: no second copy
                for i in range(len(texts)):
                    f.write(json.dumps({"index": i, "split": pair_splits[i], **texts[i]}) + "\n")
            if skipped:
                with atomic_path(build_dir / SKIPPED) as tmp, open(tmp, "w") as f:
                    f.writelines(json.dumps(row) + "\n" for row in skipped)
        manifest = _encode(settings, texts, pair_splits, build_dir, **run)
        if manifest is None:  # a DDP rank other than 0: its shards are written, rank 0 finishes
            return directory
        manifest["fingerprint"] = fingerprint
        manifest["skipped_rows"] = len(skipped)
        write_json(build_dir / MANIFEST, manifest)  # last: its presence marks the cache complete
        (build_dir / PARTIAL_MARK).unlink()
        os.rename(build_dir, directory)  # atomic; onto an absent or empty directory only (read_manifest checked)
    except BaseException:
        if first:
            shutil.rmtree(build_dir, ignore_errors=True)
        raise
    _say_cached(settings, directory, manifest)
    return directory


def _encode(
    settings: CacheSettings,
    texts: PackedTexts,
    pair_splits: list[str],
    build_dir: Path,
    batch_size: int,
    shard_tokens: int,
    accelerator: str,
    devices: int | str,
    strategy: str,
    trust_remote_code: bool,
) -> dict | None:
    """Run the backbone over every sequence, writing shards into ``build_dir``; the manifest (on rank 0)."""
    tokenizer = load_tokenizer(settings.model, trust_remote_code)
    backbone = TruncatedBackbone(
        settings.model, settings.layer, dtype=settings.compute_dtype, trust_remote_code=trust_remote_code
    )
    dataset = RenderedSequences(texts, tokenizer, settings.max_length)
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=partial(collate_right_padded, pad_id=tokenizer.pad_token_id)
    )
    writer = ShardWriter(build_dir, shard_tokens, pair_splits)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=[writer, StopOnSignal()],
        logger=False,
        enable_model_summary=False,
    )
    encoder = BackboneEncoder(backbone, settings.tokens, getattr(torch, settings.dtype))
    trainer.predict(encoder, loader, return_predictions=False)
    shards = _gather_shards(trainer, writer.shards)
    if trainer.global_rank != 0:
        return None
    return {
        "version": FORMAT_VERSION,
        "settings": asdict(settings),
        "model": settings.model,
        "layer": backbone.layer,
        "hidden_size": backbone.hidden_size,
        "dtype": settings.dtype,
        "num_pairs": len(texts),
        "num_sequences": 2 * len(texts),
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "truncated_sequences": sum(s["truncated"] for s in shards),
        "split_pairs": {name: pair_splits.count(name) for name in SPLITS},
        "shards": shards,
    }


def _say_cached(settings: CacheSettings, directory: Path, manifest: dict) -> None:
    print(
        f"sarm: cached {manifest['num_tokens']:,} token activations of {manifest['num_pairs']:,} pairs "
        f"({settings.model}, layer {manifest['layer']}) in {directory}",
        flush=True,
    )
    if manifest.get("skipped_rows"):
        print(
            f"sarm: {manifest['skipped_rows']:,} rows of {settings.data} were left out, each listed with its "
            f"reason in {directory / SKIPPED}",
            file=sys.stderr,
            flush=True,
        )
    if manifest["truncated_sequences"]:
        # Kept, not skipped: the response's end (where the reward is read) survives a left cut.
        print(
            f"sarm: {manifest['truncated_sequences']:,} of {manifest['num_sequences']:,} sequences were longer "
            f"than max_length = {settings.max_length} tokens and lost their beginning (prompt first)",
            file=sys.stderr,
            flush=True,
        )
