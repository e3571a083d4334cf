"""P3: what head-only SARM training costs against the caching pass it reads, in one run.

    python scripts/bench_head.py [--num_pairs 200] [--epochs 20] [--sae runs/demo/sae/export]

On ``--num_pairs`` built-in planted pairs through the demo's backbone and layer:

    cache      ``sarm cache`` of the pairs (the backbone's forward pass: the pipeline's one expensive step)
    served     ``--epochs`` epochs of the SARM head (mean pooling, the demo's recipe) with the pooled features
               computed once and served to every epoch (``PairActivationDataModule.serve_pooled``)
    per epoch  the same epochs pooling every response through the SAE in every epoch, as before

P3 = head training time ÷ caching time (the issue's target: ≤ 0.1 on the demo). Both sides scale with the number
of pairs, so a subset of the demo's 2,500 gives its ratio. The SAE is ``--sae`` if it exists (the demo's), else a
random TopK SAE of the demo's shape (1,024 latents, k 32: the time does not depend on what it learned).
"""

from __future__ import annotations

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
    model = SARM(sae=sae, pooling="mean", lr=0.01)
    data = PairActivationDataModule(str(cache), batch_size=64)
    if not serve:
        data.serve_pooled = lambda *args, **kwargs: False  # pool every epoch, as before serve_pooled existed
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=str(root))
    start = time.perf_counter()
    trainer.fit(model, data)
    return time.perf_counter() - start


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

    print(f"\n{num_pairs} planted pairs, {model} layer {layer}, SAE {sae}, {epochs} head epochs, batch 64")
    print(f"{'':<34}{'seconds':>9}{'P3 = ÷ cache':>14}")
    print(f"{'cache (backbone forward)':<34}{cached:>9.1f}")
    print(f"{'head, pooled features served':<34}{served:>9.1f}{served / cached:>14.3f}")
    print(f"{'head, pooled every epoch':<34}{per_epoch:>9.1f}{per_epoch / cached:>14.3f}")
    print(f"served / per epoch: {served / per_epoch:.2f}x the time")


if __name__ == "__main__":
    CLI(main, as_positional=False)
