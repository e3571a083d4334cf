"""The cache on disk, and who may write it.

A cache directory holds

    <dir>/pairs.jsonl           one line per pair: index, split, prompt_id, margin, texts, meta
    <dir>/shard-r0-00000.safetensors
        tokens    [n_tok, d]    token activations (dtype from the settings)
        token_seq [n_tok]       sequence id of each token (= 2·pair + 0 for chosen, 1 for rejected)
        token_pos [n_tok]       its position in the (possibly left-truncated) sequence
        last      [n_seq, d]    the last token's activation, where the reward head reads
        seq       [n_seq]       sequence ids of those rows
        truncated [n_seq]       whether the sequence was longer than max_length (cut from the left)
    <dir>/skipped_rows.jsonl    (if any) every row of the data left out, with where it is and why
    <dir>/manifest.json         written last: settings, fingerprint, counts, shard list
    <dir>/pooled/               added later, by reward models: their pooled features (``sarm.reward.pooled``)

It is trusted only when its manifest exists, passes ``check_manifest`` and its fingerprint (data +
settings) matches. The output directory is sarm's alone: a run builds the cache in a private
directory beside it, ``.<name>.partial`` (marked as sarm's by a ``.sarm-partial`` file), and renames
it into place when the manifest is written, so a cache appears whole or not at all. Before that,
under an exclusive lock (``.<name>.lock`` beside it: a second run into the same place waits, then
reuses the finished cache or refuses it), the target must be absent, an empty directory, or a cache
of the same settings; anything else is refused with what is there, and nothing sarm did not write
is ever deleted. A partial directory left by a killed run is removed by the next run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sarm.data.splits import SPLITS
from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object

MANIFEST = "manifest.json"
PAIRS = "pairs.jsonl"
SKIPPED = "skipped_rows.jsonl"
PARTIAL_MARK = ".sarm-partial"
DTYPES = ("bfloat16", "float16", "float32")
COMPUTE_DTYPES = ("float32", "bfloat16")  # what the backbone may compute in (CacheSettings.compute_dtype)
DEFAULT_COMPUTE_DTYPE = "float32"  # the default, and how every cache written before the setting was computed
FORMAT_VERSION = 2
SHARD_TENSORS = ("tokens", "token_seq", "token_pos", "last", "seq", "truncated")


def partial_directory(directory: Path) -> Path:
    """Where a run builds the cache before renaming it to ``directory``."""
    return directory.parent / f".{directory.name}.partial"


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the lock of ``directory`` (``.<name>.lock`` beside it); wait while another run holds it."""
    lock_path = directory.parent / f".{directory.name}.lock"
    directory.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"sarm: waiting for another run writing {directory}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the holder before us may have removed the file: then our lock is on a file nobody else sees
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # before unlocking, so a waiter on this inode sees it is stale
        os.close(fd)


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a complete cache in ``directory``, None where there is none; refuses a directory
    that holds anything else (it is not sarm's to write into) and a manifest that is not whole."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        raise SarmInputError(f"{directory}: exists and is not a directory; choose another output directory")
    path = directory / MANIFEST
    if path.is_file():
        manifest = read_json_object(path)
        if not (isinstance(manifest.get("fingerprint"), str) and isinstance(manifest.get("settings"), dict)):
            raise SarmInputError(
                f"{path}: not an activation cache's manifest (no 'fingerprint' and 'settings'); "
                "choose another output directory"
            )
        check_manifest(Fields(manifest, path))
        # Caches written before the setting existed computed in float32: every reader sees the setting.
        manifest["settings"].setdefault("compute_dtype", DEFAULT_COMPUTE_DTYPE)
        return manifest
    entries = sorted(p.name for p in directory.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise SarmInputError(
            f"{directory}: exists and is not an activation cache (holds {len(entries)} entries: "
            f"{shown}); choose an empty or new output directory"
        )
    return None


def check_manifest(fields: Fields) -> None:
    """Every manifest field a reader relies on has its type and range, and shard names stay in the cache."""
    version = fields.integer("version", low=1)
    if version != FORMAT_VERSION:
        raise fields.error(
            "version",
            f"{version}: a cache of another sarm version (this one reads "
            f"{FORMAT_VERSION}); cache again into a new directory",
        )
    fields.integer("layer", low=1)
    fields.integer("hidden_size", low=1)
    fields.choice("dtype", DTYPES)
    settings = fields.section("settings")
    settings.choice("compute_dtype", COMPUTE_DTYPES, default=DEFAULT_COMPUTE_DTYPE)
    pairs = fields.integer("num_pairs", low=1)
    fields.integer("num_sequences", low=2 * pairs, high=2 * pairs)
    fields.integer("num_tokens", low=0)
    split_pairs = fields.section("split_pairs")
    for name in SPLITS:
        split_pairs.integer(name, low=0, high=pairs)
    shards = fields.data.get("shards")
    if not isinstance(shards, list) or not shards:
        raise fields.error("shards", "expected a non-empty list of shard records")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise fields.error(f"shards[{i}]", "expected a shard record (a JSON object)")
        record = Fields(shard, fields.path, f"shards[{i}].")
        name = record.text("file")
        if Path(name).name != name or name in (".", ".."):  # a manifest cannot point outside its cache
            raise record.error("file", f"{name!r} is not a file name in the cache directory")
        record.integer("num_tokens", low=0)
        record.integer("num_sequences", low=0)


def start_partial(partial: Path) -> None:
    """An empty private build directory, replacing one a killed run left (only if it is marked as sarm's)."""
    if partial.exists():
        if not (partial / PARTIAL_MARK).is_file():
            raise SarmInputError(f"{partial}: exists and was not written by sarm; move it away to cache here")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARK).touch()
