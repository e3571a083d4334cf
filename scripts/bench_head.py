"""P3: what head-only SARM training costs against the caching pass it reads, in one run.

    python scripts/bench_head.py [--num_pairs 200] [--epochs 20] [--sae runs/demo/sae/export]

On ``--num_pairs`` built-in planted pairs through the demo's backbone and layer:

    cache      ``sarm cache`` of the pairs (the backbone's forward pass: the pipeline's one expensive step)
    served     ``--epochs`` epochs of the SARM head (mean pooling, the demo's recipe) with the pooled features
               computed once and served to every epoch (``PairActivationDataModule.serve_pooled``)
    per epoch  the same epochs pooling every response through the SAE in every epoch, as before
    test       ``sarm test`` of the exported head (accuracy, then legibility's refits on the train split), and
    attribute  ``sarm attribute`` of its test split, each two ways: reading the pooled features the fit kept beside
               the cache (``sarm.reward.pooled``), and as before, pooling every split they read from hidden states

P3 = head training time ÷ caching time (the issue's target: ≤ 0.1 on the demo); the same ratio for test and
attribute. Both sides scale with the number
of pairs, so a subset of the demo's 2,500 gives its ratio. The SAE is ``--sae`` if it exists (the demo's), else a
random TopK SAE of the demo's shape (1,024 latents, k 32: the time does not depend on what it learned).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from jsonargparse import CLI

from sarm.cache import CacheSettings, PairActivationDataModule, cache_activations
from sarm.reward import SARM
from sarm.sae import TopKSAE, save_sae
from sarm.testing import quiet_trainer


def train_head(cache: Path, sae: str, epochs: int, serve: bool, root: Path) -> float:
    """Seconds of ``trainer.fit`` of the demo's SARM head recipe for ``epochs`` epochs."""
    L.seed_everything(0, verbose=False)
    model = SARM(sae=sae, pooling="mean", lr=0.01, export_dir=str(root / "export"))
    data = PairActivationDataModule(str(cache), batch_size=64)
    if not serve:
        data.serve_pooled = lambda *args, **kwargs: False  # pool every epoch, as before serve_pooled existed
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=str(root))
    start = time.perf_counter()
    trainer.fit(model, data)
    return time.perf_counter() - start


def evaluate(cache: Path, export: Path, num_pairs: int, root: Path, kept: bool) -> tuple[float, float]:
    """Seconds of ``sarm test`` and of ``sarm attribute`` on the test split of ``cache``; with ``kept`` False, no
    pooled features are read or kept (each split pooled from hidden states where it is read)."""
    import sarm.reward.pooled
    from sarm.attribution.command import attribute

    limit, serve = sarm.reward.pooled.STORE_BYTES, PairActivationDataModule.serve_pooled
    if not kept:
        shutil.rmtree(cache / sarm.reward.pooled.STORE_DIR, ignore_errors=True)
        sarm.reward.pooled.STORE_BYTES = -1
        PairActivationDataModule.serve_pooled = lambda *args, **kwargs: False
    try:
        start = time.perf_counter()
        quiet_trainer().test(SARM(init_from=str(export)), PairActivationDataModule(str(cache), 64), verbose=False)
        tested = time.perf_counter() - start
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            attribute(
                str(export),
                "builtin:planted",
                num_pairs=num_pairs,
                split_fractions=(0.7, 0.15, 0.15),
                cache_dir=str(cache),
                output=str(root / f"attribution-{kept}"),
            )
        attributed = time.perf_counter() - start
    finally:
        sarm.reward.pooled.STORE_BYTES, PairActivationDataModule.serve_pooled = limit, serve
    return tested, attributed


def main(
    num_pairs: int = 200,
    epochs: int = 20,
    sae: str = "runs/demo/sae/export",
    model: str = "embedded:SmolLM2-135M-Instruct",
    layer: int = 15,
) -> None:
    """Print caching time, head training time (served and pooled per epoch) and P3 for each.

    Args:
        num_pairs: built-in planted pairs cached and trained on.
        epochs: head epochs (the demo's recipe: 20).
        sae: a trained SAE of the backbone's width; a random TopK SAE when it does not exist.
        model: backbone.
        layer: decoder layers kept.
    """
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = CacheSettings(
            data="builtin:planted",
            num_pairs=num_pairs,
            model=model,
            layer=layer,
            max_length=256,
            split_fractions=(0.7, 0.15, 0.15),
        )
        start = time.perf_counter()
        cache = cache_activations(settings, output=str(root / "cache"))
        cached = time.perf_counter() - start
        if not Path(sae, "cfg.json").is_file():
            torch.manual_seed(0)
            width = PairActivationDataModule(str(cache)).hidden_size
            sae = str(save_sae(TopKSAE(width, 1024, 32), root / "sae"))
        served = train_head(cache, sae, epochs, True, root / "served")
        per_epoch = train_head(cache, sae, epochs, False, root / "per-epoch")
        kept = evaluate(Path(cache), root / "served" / "export", num_pairs, root, kept=True)  # fit's, then its own
        before = evaluate(Path(cache), root / "served" / "export", num_pairs, root, kept=False)

    print(f"\n{num_pairs} planted pairs, {model} layer {layer}, SAE {sae}, {epochs} head epochs, batch 64")
    print(f"{'':<38}{'seconds':>9}{'P3 = ÷ cache':>14}")
    print(f"{'cache (backbone forward)':<38}{cached:>9.1f}")
    print(f"{'head, pooled features served':<38}{served:>9.1f}{served / cached:>14.3f}")
    print(f"{'head, pooled every epoch':<38}{per_epoch:>9.1f}{per_epoch / cached:>14.3f}")
    print(f"served / per epoch: {served / per_epoch:.2f}x the time")
    for name, now, then in zip(("test", "attribute"), kept, before, strict=True):
        print(f"{name + ', kept pooled features':<38}{now:>9.1f}{now / cached:>14.3f}")
        print(f"{name + ', pooled from hidden states':<38}{then:>9.1f}{then / cached:>14.3f}")


if __name__ == "__main__":
    CLI(main, as_positional=False)
