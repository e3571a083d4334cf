"""Train every SAE variant for the same token budget on one activation cache; print one table.

    python scripts/compare_sae.py [--cache runs/demo/cache] [--epochs 4] [--n_latents 2048] [--k 64]

Variants: TopK, BatchTopK, ReLU-L1, ReLU with p-annealing, TopK + adaptive temporal masking,
TopK on whitened inputs. Metrics are the held-out (val split) ones the SAE module logs: FVU, L0,
dead %, and planted-attribute coverage when the cache holds the built-in planted data.
"""

from __future__ import annotations

import time
import warnings

import lightning as L
from jsonargparse import CLI

from sarm.cache import TokenActivationDataModule
from sarm.callbacks import AdaptiveTemporalMasking, PAnnealing
from sarm.callbacks.coverage import PlantedCoverage
from sarm.sae import SAEModule


def variants(n_latents: int, k: int, l1: float) -> dict[str, tuple[dict, list]]:
    topk = {"architecture": "topk", "n_latents": n_latents, "k": k}
    relu = {"architecture": "relu", "n_latents": n_latents, "sparsity_coefficient": l1, "auxk_coefficient": 0.0}
    return {
        "TopK": (topk, []),
        "BatchTopK": ({**topk, "architecture": "batchtopk"}, []),
        "ReLU-L1": (relu, []),
        "ReLU p-anneal": (relu, [PAnnealing(p_start=1.0, p_end=0.2, n_updates=10, anneal_start=0.27)]),
        "TopK + ATM": (topk, [AdaptiveTemporalMasking(warmup_steps=100, update_every=10)]),
        "TopK whitened": ({**topk, "whitening": True}, []),
    }


def main(
    cache: str = "runs/demo/cache",
    epochs: int = 4,
    n_latents: int = 2048,
    k: int = 64,
    l1: float = 0.005,
    batch_size: int = 1024,
) -> None:
    """Train every SAE variant on ``cache`` for the same number of epochs and print their held-out metrics.

    Args:
        cache: a `sarm cache` directory.
        epochs: training epochs of every variant.
        n_latents: SAE latents.
        k: active latents per token, for the TopK variants.
        l1: sparsity coefficient of the ReLU variants.
        batch_size: tokens per batch.
    """
    warnings.filterwarnings("ignore")
    rows = []
    for name, (config, callbacks) in variants(n_latents, k, l1).items():
        L.seed_everything(0, verbose=False)
        module = SAEModule(lr=1e-3, warmup_steps=20, **config)
        data = TokenActivationDataModule(cache, batch_size=batch_size, sequence_fraction=0.25)
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=[*callbacks, PlantedCoverage()],
        )  # logs val/coverage on planted data
        start = time.perf_counter()
        trainer.fit(module, data)
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        rows.append(
            (
                name,
                m.get("val/fvu"),
                m.get("val/l0"),
                m.get("val/dead_fraction"),
                m.get("val/coverage"),
                time.perf_counter() - start,
            )
        )
        print(f"done: {name}", flush=True)
    print(f"\n{'variant':<15} {'FVU':>7} {'L0':>8} {'dead %':>7} {'coverage':>9} {'time s':>7}")
    for name, fvu, l0, dead, cov, seconds in rows:
        cov_text = f"{cov:.3f}" if cov is not None else "-"
        print(f"{name:<15} {fvu:>7.4f} {l0:>8.1f} {dead:>7.1%} {cov_text:>9} {seconds:>7.0f}")


if __name__ == "__main__":
    CLI(main, as_positional=False)
