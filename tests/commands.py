"""The `sarm` command lines the tests run, each defined once.

Each function returns the argument list for ``sarm.cli.main([...])``; for a process of its own, put ``SARM_CLI``
in front (``[*SARM_CLI, *fit_sae(...)]``). Options are a dict, turned into arguments by ``flags`` in their order;
``overrides`` change a default in place or add an option after them: ``model__lr=0.003`` (or ``**{"model.lr":
0.003}``) for ``--model.lr 0.003``, and ``None`` leaves a default option out. ``extra`` arguments go last, as given
(callbacks: ``--trainer.callbacks+=...`` and the settings that follow it).
"""

from __future__ import annotations

import sys
from pathlib import Path

SARM_CLI = [sys.executable, "-m", "sarm.cli"]  # `sarm` in a process of its own

SAE = "sarm.sae.SAEModule"
SARM_HEAD = "sarm.reward.SARM"
TOKENS = "sarm.cache.TokenActivationDataModule"
PAIRS = "sarm.cache.PairActivationDataModule"

# Lightning on the CPU with no logger, no checkpoints and no progress bar (``flags(QUIET_CPU)`` for the arguments).
QUIET_CPU = {
    "trainer.accelerator": "cpu",
    "trainer.logger": False,
    "trainer.enable_checkpointing": False,
    "trainer.enable_progress_bar": False,
}


def value(v) -> str:
    """An option's value as the command line spells it: booleans in lower case, anything else as ``str``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def flags(options: dict) -> list[str]:
    """``{"model.k": 4, ...}`` → ``["--model.k", "4", ...]``, in insertion order; an option set to None is left out.

    Lightning needs ``--model <class>`` before ``--model.<option>``: put the class first in the dict.
    """
    return [arg for name, v in options.items() if v is not None for arg in (f"--{name}", value(v))]


def with_overrides(defaults: dict, overrides: dict) -> dict:
    """``defaults`` changed by ``overrides`` (``a__b`` names the option ``a.b``): a known option keeps its place."""
    return defaults | {name.replace("__", "."): v for name, v in overrides.items()}


def fit_sae(cache, root: Path, *extra, epochs: int, export=None, config=None, **overrides) -> list[str]:
    """`sarm fit` of the tiny TopK SAE most tests train: 64 latents, k 4, batches of 64 tokens from ``cache``,
    exported to ``export`` (root/"sae"), ``epochs`` epochs, quiet on the CPU, Lightning's files under ``root``.

    ``config``: a recipe given first (``--config``), whose model and data classes stand.
    """
    options = {
        "model": None if config else SAE,
        "model.n_latents": 64,
        "model.k": 4,
        "model.export_dir": export or root / "sae",
        "data": None if config else TOKENS,
        "data.cache_dir": cache,
        "data.batch_size": 64,
        "trainer.max_epochs": epochs,
        "trainer.default_root_dir": root,
        **QUIET_CPU,
    }
    recipe = ["--config", str(config)] if config else []
    return ["fit", *recipe, *flags(with_overrides(options, overrides)), *extra]


def fit_sarm(cache, sae, root: Path, *extra, epochs: int, export=None, **overrides) -> list[str]:
    """`sarm fit` of a SARM head on the SAE ``sae`` (lr 0.05): batches of 8 cached pairs from ``cache``, exported to
    ``export`` (root/"sarm"), ``epochs`` epochs, quiet on the CPU, Lightning's files under ``root``."""
    options = {
        "model": SARM_HEAD,
        "model.sae": sae,
        "model.lr": 0.05,
        "model.export_dir": export or root / "sarm",
        "data": PAIRS,
        "data.cache_dir": cache,
        "data.batch_size": 8,
        "trainer.max_epochs": epochs,
        "trainer.default_root_dir": root,
        **QUIET_CPU,
    }
    return ["fit", *flags(with_overrides(options, overrides)), *extra]


def model_checkpoint(dirpath, save_last: bool = True, **settings) -> list[str]:
    """A ModelCheckpoint callback writing into ``dirpath`` (``last.ckpt`` too), with ``settings``."""
    settings = {"dirpath": dirpath, "save_last": save_last, **settings}
    return [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        *(f"--trainer.callbacks.{name}={value(v)}" for name, v in settings.items()),
    ]


def cache_args(data, model, **overrides) -> list[str]:
    """The options of `sarm cache` that read ``data`` through layer 2 of ``model``, 48 tokens at the most."""
    return flags(with_overrides({"data": data, "model": model, "layer": 2, "max_length": 48}, overrides))


def cache_pairs(data, model, output, **overrides) -> list[str]:
    """`sarm cache` of ``data`` through layer 2 of ``model`` (48 tokens at the most) into ``output``."""
    return ["cache", *cache_args(data, model, **overrides), "--output", str(output)]


def attribute(sarm, data, cache_dir, output, **overrides) -> list[str]:
    """`sarm attribute` of the SARM ``sarm`` over the test split (50/25/25) of ``data``, cached in ``cache_dir``."""
    options = {"sarm": sarm, "data": data, "cache_dir": cache_dir, "split": "test"}
    options["split_fractions"] = [0.5, 0.25, 0.25]
    return ["attribute", *flags(with_overrides(options, overrides)), "--output", str(output)]


def quiet_trainer(max_steps: int, callbacks=(), **kwargs):
    """An in-process CPU Trainer with nothing but the run: no logger, checkpoints, bars or summary."""
    from sarm.testing import quiet_trainer

    return quiet_trainer(accelerator="cpu", max_steps=max_steps, callbacks=list(callbacks), **kwargs)
