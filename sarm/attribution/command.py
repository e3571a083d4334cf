"""``sarm attribute``: which features make chosen beat rejected, for a trained SARM and a dataset.

A command restores the exported SARM once (``load_sarm``) and runs one predict pass per dataset
(``attribute_dataset``), with ``RewardAttribution`` writing everything later steps read (``sarm.attribution.store``).
"""

from __future__ import annotations

import gc
from pathlib import Path

import lightning as L

from sarm.attribution.callback import RewardAttribution
from sarm.attribution.legibility import legibility_curve
from sarm.cache import ActivationCache, CacheSettings, PairActivationDataModule, cache_activations
from sarm.cache.layout import read_manifest
from sarm.errors import SarmInputError
from sarm.reward.export import compute_dtype, read_config
from sarm.reward.residual_sarm import ResidualSARM
from sarm.reward.sarm import SARM


def load_sarm(sarm: str) -> tuple[SARM, dict]:
    """The exported SARM in ``sarm`` as a LightningModule (a ``ResidualSARM`` for a residualized one), and its
    ``sarm.json``: the one place a command restores it.

    Its weights are loaded once, here; ``sarm.json`` is checked first, so that a dense model (no SAE features)
    and a fine-tuned (LoRA) backbone are refused with the reason: attribution reads cached activations of the
    original backbone.
    """
    config = read_config(sarm)
    if config["kind"] not in ("sarm", "residual_sarm"):
        raise SarmInputError(f"{sarm}: a {config['kind']!r} reward model has no SAE features to attribute to")
    if config["backbone"].get("weights", "reference") != "reference":
        raise SarmInputError(
            f"{sarm}: its backbone was fine-tuned (LoRA); attribution reads cached activations "
            "of the original backbone, so it needs a head-only SARM"
        )
    module = ResidualSARM if config["kind"] == "residual_sarm" else SARM
    return module(init_from=sarm), config


def attribute(
    sarm: str,
    data: str,
    num_pairs: int = 2000,
    seed: int = 0,
    split: str = "test",
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    output: str = "runs/attribution",
    cache_dir: str | None = None,
    batch_size: int = 256,
    top: int = 10,
    dtype: str | None = None,
) -> dict:
    """Attribute a trained SARM's rewards to its features over a preference dataset.

    The dataset's hidden states are cached with the backbone settings the SARM was trained with
    (an existing cache of the same data and settings is reused), then every pair of ``split`` is
    scored and its margin split into per-feature contributions; features are ranked by
    |mean margin contribution| (``sarm.attribution.rank_features``). For the val or test split, its legibility
    too (``sarm.attribution.legibility.legibility_curve``: accuracy with the train split's top-m features kept,
    with and without a refit, against the converged dense baseline on the same pooling), in ``summary.json``.

    Args:
        sarm: directory of an exported SARM (``sarm.json``).
        data: a preference file, ``builtin:planted`` or a hub dataset name.
        num_pairs: pairs to generate, for ``builtin:planted``.
        seed: generator seed, for ``builtin:planted``.
        split: ``train``, ``val``, ``test`` (split by prompt) or ``all``.
        split_fractions: train/val/test fractions of the by-prompt split.
        split_seed: seed of the split.
        output: directory for ``features.csv/json``, ``pairs.csv``, ``summary.json``, ``contributions.safetensors``.
        cache_dir: activation cache directory (default: under ``$SARM_CACHE``, keyed by fingerprint).
        batch_size: pairs per batch.
        top: how many top features to print and to keep per-pair contributions of.
        dtype: storage dtype of a new cache (bfloat16, float16, float32); default: that of the cache already
            in ``cache_dir``, else bfloat16.
    """
    model, config = load_sarm(sarm)
    return attribute_dataset(
        model,
        config,
        data,
        num_pairs=num_pairs,
        seed=seed,
        split=split,
        split_fractions=split_fractions,
        split_seed=split_seed,
        output=output,
        cache_dir=cache_dir,
        batch_size=batch_size,
        top=top,
        dtype=dtype,
    )


def attribute_dataset(
    model: SARM,
    config: dict,
    data: str,
    *,
    num_pairs: int,
    seed: int,
    split: str,
    split_fractions: tuple[float, float, float],
    split_seed: int,
    output: str,
    cache_dir: str | None,
    batch_size: int,
    top: int,
    dtype: str | None,
) -> dict:
    """``attribute`` with the SARM already restored (``load_sarm``): cache ``data``, then one predict pass."""
    backbone = config["backbone"]
    if dtype is None:  # whatever precision an existing cache was written in: it is the same data otherwise
        existing = read_manifest(Path(cache_dir)) if cache_dir else None
        dtype = existing["settings"].get("dtype", "bfloat16") if existing else "bfloat16"
    settings = CacheSettings(
        data=data,
        num_pairs=num_pairs,
        seed=seed,
        model=backbone["model"],
        layer=backbone["layer"],
        max_length=backbone["max_length"],
        tokens="response",
        dtype=dtype,
        compute_dtype=compute_dtype(config),  # as the model's training data was computed
        split_fractions=split_fractions,
        split_seed=split_seed,
    )
    directory = cache_activations(settings, output=cache_dir)
    split_pairs = ActivationCache(directory).manifest["split_pairs"]
    if (sum(split_pairs.values()) if split == "all" else split_pairs.get(split, 0)) == 0:
        counts = ", ".join(f"{name} {count}" for name, count in split_pairs.items())
        raise SarmInputError(
            f"{data}: the '{split}' split holds no pairs (split_fractions {list(split_fractions)} "
            f"gave {counts}); choose another split or other fractions"
        )
    # The cache's Trainer sits in reference cycles (trainer, callbacks, module) that keep its whole
    # dataset alive until a full collection: collect it before the attribution pass allocates.
    gc.collect()
    datamodule = PairActivationDataModule(str(directory), batch_size, split, pooling=config["pooling"])
    # accuracy against the number of features kept (ranked on the train split), and the dense baseline's line
    # (a residualized SARM's curve would have to say what becomes of its residual: not drawn)
    curve = None if config["kind"] == "residual_sarm" else legibility_curve(model.network, datamodule, split)
    callback = RewardAttribution(output_dir=output, top=top, stages=("predict",), legibility=curve)
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, callbacks=[callback], enable_model_summary=False)
    trainer.predict(model, datamodule, return_predictions=False)
    return {
        "output": str(Path(output)),
        "cache": str(directory),
        **{k: v for k, v in (callback.result or {}).items() if v.numel() == 1},
    }
