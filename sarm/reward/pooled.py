"""Pooled features of a cache through a frozen reward network, computed once and kept beside the cache.

A head-only reward model reads z = pool(f(h)) for every pair; with the backbone cached and the SAE frozen, z
never changes, yet fitting a head, testing it, attributing it and fitting its budget or residualized variants
each need it again. Encoding every response token through the SAE is the expensive part of all of them, so the
first command to pool a split keeps the result and every later one reads it:

    <cache_dir>/pooled/<key>.<split>.safetensors     chosen [P, n], rejected [P, n], margin [P]   (float32)

``key`` (``features_key``) is a sha256 over what decides z: the network's config (kind, pooling, width, feature
source), the SAE's config, and the bytes of every tensor of the network but its head (the SAE's weights, its
latent mask, its whitening). A retrained, edited or differently pooled SAE gets another key, so it never reads
another's features; the cache's own fingerprint is checked against the file's metadata, so a cache rebuilt in
the same directory is never served the features of the old one.

The files live in the cache directory because they belong to it: removing the cache removes them. A directory
sarm cannot write to is read as before, without keeping anything (said once). Features above ``STORE_BYTES``
per split are not kept. The first command to pool decides the bits: features pooled on a GPU are what later
CPU commands read (they agree with a CPU pooling to float32 rounding).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sarm.reward.network import RewardNetwork

STORE_BYTES = 2 << 30  # per split file: larger pooled features are recomputed, not written
STORE_DIR = "pooled"
_unwritable: set[Path] = set()  # directories already reported as unwritable in this process


@torch.no_grad()
def features_key(network: RewardNetwork) -> str:
    """16 hex digits naming what ``network.features`` computes (module docstring): every input but the head."""
    config = network.config()
    sae = getattr(network, "sae", None)
    if sae is not None:
        config["sae"] = sae.config()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(network.state_dict().items()):
        if name.startswith("head."):
            continue
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # the buffer itself: no copy of the SAE's bytes
    return digest.hexdigest()[:16]


def store_path(cache_dir: str | Path, key: str, split: str) -> Path:
    return Path(cache_dir) / STORE_DIR / f"{key}.{split}.safetensors"


@torch.no_grad()
def pooled_features(
    network: RewardNetwork, data, split: str, batch_size: int = 64, store: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z_chosen, z_rejected, margin)`` of every pair of ``split``, ``[P, n]``, ``[P, n]``, ``[P]`` (on the CPU).

    Args:
        network: a SARM or dense network; its pooling (and SAE) make the features, as in training.
        data: a ``sarm.cache.PairActivationDataModule``; it is handed the network's pooling (``take_pooling``).
        split: train, val or test.
        store: read the features kept for this (network, cache, split) if there are any, and keep them if they are
            computed here (module docstring); False always pools through the network and keeps nothing.
    """
    data.take_pooling(network.pooling)
    network.eval()  # the features a frozen network serves (a BatchTopK SAE thresholds in eval mode)
    if not store:
        return _pool(network, data, split, batch_size)
    cache = data.cache
    fingerprint = cache.manifest["fingerprint"]
    path = store_path(cache.directory, features_key(network), split)
    expected = (len(cache.pair_indices(split)), network.head.weight.numel())
    kept = _read(path, fingerprint, expected)
    if kept is not None:
        return kept
    chosen, rejected, margin = _pool(network, data, split, batch_size)
    if 2 * chosen.numel() * chosen.element_size() <= STORE_BYTES:
        _write(path, fingerprint, split, chosen, rejected, margin)
    return chosen, rejected, margin


def _pool(network: RewardNetwork, data, split: str, batch_size: int):
    from sarm.cache.datamodules import CachedPairs

    device = next(network.parameters()).device  # where the network is (a trainer may have moved it); CPU results
    loader = DataLoader(CachedPairs(data.cache, split), batch_size=batch_size, collate_fn=data.hidden_batch)
    chosen, rejected, margins = [], [], []
    for batch in loader:
        z = network.features(batch["hidden"].to(device).float(), batch["mask"].to(device)).cpu()
        half = z.shape[0] // 2
        chosen.append(z[:half])
        rejected.append(z[half:])
        margins.append(batch["margin"].float())
    return torch.cat(chosen), torch.cat(rejected), torch.cat(margins)


def _read(path: Path, fingerprint: str, shape: tuple[int, int]):
    """The kept features at ``path``, or None where there are none, they are another cache's or of another shape,
    or the file cannot be read (then they are pooled again and the file replaced)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("cache_fingerprint") != fingerprint:
                return None
            chosen, rejected, margin = (f.get_tensor(name) for name in ("chosen", "rejected", "margin"))
    except Exception as error:  # a truncated or foreign file: pooling again replaces it
        print(f"sarm: {path}: unreadable ({error}); pooling again", file=sys.stderr, flush=True)
        return None
    if chosen.shape != shape or rejected.shape != shape or margin.shape != shape[:1]:
        return None
    return chosen, rejected, margin


def _write(path: Path, fingerprint: str, split: str, chosen, rejected, margin) -> None:
    from sarm.io import save_tensors

    if path.parent in _unwritable:
        return
    try:
        save_tensors(
            path,
            {"chosen": chosen, "rejected": rejected, "margin": margin},
            metadata={"cache_fingerprint": fingerprint, "split": split},
        )
    except OSError as error:
        _unwritable.add(path.parent)
        print(
            f"sarm: cannot keep pooled features in {path.parent} ({error.strerror or error}); "
            "every command pools them again",
            file=sys.stderr,
            flush=True,
        )
