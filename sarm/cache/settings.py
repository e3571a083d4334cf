"""What decides a cache's content, and the fingerprint that names it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sarm.backbone import DEFAULT_BACKBONE
from sarm.cache.layout import COMPUTE_DTYPES, DEFAULT_COMPUTE_DTYPE, DTYPES, FORMAT_VERSION
from sarm.data.readers import BUILTIN_PREFIX, is_path_source, source_files


@dataclass
class CacheSettings:
    """Everything that decides what the cache holds (hashed into its fingerprint).

    Args:
        data: a preference file (.jsonl/.json/.parquet/.csv, optionally .gz), a ``datasets`` directory,
            ``builtin:planted`` (the generated pairs with planted attributes), or a hub dataset name.
        num_pairs: pairs to generate, for ``builtin:planted``.
        seed: generator seed, for ``builtin:planted``.
        hf_split: the split to read, for a hub dataset or a ``datasets`` directory holding several.
        model: backbone (``embedded:SmolLM2-135M-Instruct``, a .gguf file, a local dir or a hub id).
        layer: read the residual stream after this many decoder layers (default: half the depth).
        max_length: longer sequences are truncated from the left, so the response's end survives.
        tokens: which token activations to keep: the final response's tokens, or all tokens.
        dtype: storage dtype of the activations.
        compute_dtype: the dtype the backbone computes in: ``float32`` (the default; every README figure), or
            ``bfloat16``: ~3.6× faster through SmolLM2 on CPUs with AVX512-BF16 (and the GPUs' fast path), with
            activations ~5 % (relative L2, layer 15) from float32's, ten times the bfloat16 storage rounding. A
            reward model trained on such a cache records it, and scores text computing the same way.
        split_fractions: train/val/test fractions, assigned by prompt.
        split_seed: seed of the split.
        bad_rows: a row that cannot be read stops the run (``error``: every bad row of the data is named
            first) or is left out (``skip``); left-out rows are listed in the cache's ``skipped_rows.jsonl``.
    """

    data: str
    num_pairs: int = 2000
    seed: int = 0
    hf_split: str = "train"
    model: str = DEFAULT_BACKBONE
    layer: int | None = None
    max_length: int = 512
    tokens: Literal["response", "all"] = "response"
    dtype: Literal[DTYPES] = "bfloat16"
    compute_dtype: Literal[COMPUTE_DTYPES] = DEFAULT_COMPUTE_DTYPE
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    bad_rows: Literal["error", "skip"] = "error"

    def fingerprint(self) -> str:
        payload = asdict(self)
        if payload["compute_dtype"] == DEFAULT_COMPUTE_DTYPE:  # how every cache was computed before the setting
            del payload["compute_dtype"]  # existed: left out, so their fingerprints, and the caches, stay valid
        payload |= {
            "data": data_fingerprint(self.data, num_pairs=self.num_pairs, seed=self.seed, hf_split=self.hf_split),
            "format": FORMAT_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def data_fingerprint(source: str | os.PathLike, *, num_pairs: int, seed: int, hf_split: str = "train") -> str:
    """sha256 (hex) identifying the data ``load_preferences`` would read, for cache reuse.

    A file: its bytes (streamed; a gzip file's compressed bytes). A directory (``save_to_disk``): the
    relative path, size and bytes of every file in it, in path order, and the split. ``builtin:planted``:
    its parameters and every source file of the generator package (templates included), so editing
    any of them invalidates caches. A hub
    dataset: its name and split only (a new revision on the hub is not noticed; pin one with a local
    file if that matters).
    """
    name = os.fspath(source)
    digest = hashlib.sha256()
    if is_path_source(name):
        path = Path(name)
        for file in source_files(path):
            if path.is_dir():  # which file, and where it ends, so moving bytes between files changes the digest
                relative = file.relative_to(path).as_posix()
                digest.update(f"{relative}\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        if path.is_dir():
            digest.update(f"split\0{hf_split}".encode())
        return digest.hexdigest()
    if name.startswith(BUILTIN_PREFIX):
        params: dict[str, Any] = {"builtin": name, "num_pairs": num_pairs, "seed": seed}
        if name == "builtin:planted":
            params["generator"] = package_digest("sarm.data.planted")
    else:
        params = {"hub": name, "split": hf_split}
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()


def package_digest(package: str) -> str:
    """sha256 of every ``.py`` file of ``package`` (names and bytes, in path order)."""
    root = Path(importlib.util.find_spec(package).origin).parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(f"{file.relative_to(root).as_posix()}\0".encode() + file.read_bytes())
    return digest.hexdigest()
