"""Legibility of reward models on one cache: accuracy against the number of features that carry it; one table.

    python scripts/legibility.py --cache runs/demo/cache --sarm runs/demo/sarm/export \\
        [--sarm_l1 runs/demo/sarm_sparse/export] [--dense runs/demo/dense/export] [--output runs/legibility]

Every row reads the same cache, split and pooling (the SARM export's):

    dense (trainer)             a DenseRM head trained by the Lightning trainer (``--dense``: an export of one;
                                else trained here for ``--epochs`` at ``--lr``, batch 64, as configs/demo/sarm.yaml)
    dense (L-BFGS)              the converged full-batch fit on the same pooled hidden states (λ chosen on val)
    SARM head (trainer)         the ``--sarm`` export as trained
    SARM L1 head (trainer)      ``--sarm_l1``: an export trained with ``head_l1``, if given
    SARM all, L-BFGS λ=0        every SAE feature refit to convergence, unpenalized
    SARM all, L-BFGS            the same with λ chosen on val
    SARM budget m=50            ``sarm.reward.fit.budget_head`` (what ``SARM(max_features=50)`` exports)

Columns: test and val accuracy, non-zero weights, the per-pair top-50 share of |contributions| on the test split
(``sarm.attribution.legibility.per_pair_share``), the fit's final gradient norm (‖∇L‖_∞; converged ≤ 1e-6), and
the accuracy-vs-m curve: keep the train split's top-m features (m = 5, 10, 20, 50, 100, all), as weighted by the
model (``keep``) or refit alone, unpenalized (``refit``), on the train split. Pooled features are computed once
and kept beside the cache (``sarm.reward.pooled``). Writes ``<output>/legibility.json`` and ``legibility.png``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from jsonargparse import CLI

from sarm.attribution.legibility import MS, per_pair_share, top_m_accuracy
from sarm.cache import PairActivationDataModule
from sarm.io import write_json
from sarm.reward.export import load_network
from sarm.reward.fit import (
    SPLITS,
    best_l2_fit,
    budget_head,
    fit_head,
    pair_accuracy,
    sarm_and_dense_differences,
)
from sarm.testing import quiet_trainer


def train_dense(cache: str, pooling: str, epochs: int, lr: float, root: Path) -> torch.Tensor:
    """The dense head as the trainer makes it (the same module, loss and optimizer as ``sarm fit``)."""
    import lightning as L

    from sarm.reward import DenseRM

    L.seed_everything(0, verbose=False)
    module = DenseRM(pooling=pooling, lr=lr)
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=str(root), num_sanity_val_steps=0)
    trainer.fit(module, PairActivationDataModule(cache, batch_size=64))
    return module.network.head.weight.detach().cpu().clone()


def row(name: str, weight: torch.Tensor, diff: dict[str, torch.Tensor], fit=None, **extra) -> dict:
    curve = {
        how: top_m_accuracy(diff["train"], diff["test"], weight, MS, refit=how == "refit") for how in ("keep", "refit")
    }
    result = {
        "model": name,
        "test_accuracy": pair_accuracy(diff["test"], weight),
        "val_accuracy": pair_accuracy(diff["val"], weight),
        "nonzero": int((weight != 0).sum()),
        "top50_share": per_pair_share(diff["test"] * weight, 50),
        "grad_norm": None if fit is None else fit.grad_norm,
        "converged": None if fit is None else fit.converged,
        "curve": curve,
        **extra,
    }
    print(f"done: {name}: test {result['test_accuracy']:.4f}", flush=True)
    return result


def prepare(cache: str, sarm: str, output: str, threads: int):
    """The output directory, the exported SARM's network, and the pooled pair differences of every split of
    ``cache`` through it and through the dense baseline (kept beside the cache: ``sarm.reward.pooled``)."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    network, _ = load_network(sarm)
    start = time.perf_counter()
    features = sarm_and_dense_differences(network, cache)
    print(f"pooled features in {time.perf_counter() - start:.0f} s", flush=True)
    return root, network, features


def main(
    cache: str,
    sarm: str,
    sarm_l1: str | None = None,
    dense: str | None = None,
    epochs: int = 20,
    lr: float = 0.01,
    max_features: int = 50,
    output: str = "runs/legibility",
    threads: int = 1,
) -> None:
    """Measure legibility (top-m accuracy, per-pair share) of dense and SARM heads on one cache; print one table.

    Args:
        cache: a `sarm cache` directory (the split and pooled features of every row).
        sarm: an exported SARM trained on that cache (its SAE, pooling and trained head).
        sarm_l1: an exported SARM trained with head_l1 on the same SAE (optional row).
        dense: an exported dense head with the SARM's pooling (default: trained here).
        epochs: epochs of the dense head trained here.
        lr: its learning rate.
        max_features: the budget head's m.
        output: directory for legibility.json and legibility.png.
        threads: torch CPU threads.
    """
    root, network, features = prepare(cache, sarm, output, threads)
    z_sarm, z_dense = features["sarm"], features["dense"]

    rows = []
    if dense is not None:
        dense_weight, dense_config = load_network(dense)
        if dense_config["kind"] != "dense" or dense_config["pooling"] != network.pooling:
            raise ValueError(f"--dense {dense}: expected a dense head with pooling {network.pooling!r}")
        dense_weight = dense_weight.head.weight.detach()
    else:
        dense_weight = train_dense(cache, network.pooling, epochs, lr, root / "dense")
    rows.append(row("dense (trainer)", dense_weight, z_dense))
    lam, fit = best_l2_fit(z_dense)
    rows.append(row("dense (L-BFGS)", fit.weight, z_dense, fit, l2=lam))
    rows.append(row("SARM head (trainer)", network.head.weight.detach(), z_sarm))
    if sarm_l1 is not None:
        l1_network, _ = load_network(sarm_l1)
        rows.append(row("SARM L1 head (trainer)", l1_network.head.weight.detach(), z_sarm))
    fit = fit_head(z_sarm["train"])
    rows.append(row("SARM all, L-BFGS λ=0", fit.weight, z_sarm, fit, l2=0.0))
    lam, fit = best_l2_fit(z_sarm)
    rows.append(row("SARM all, L-BFGS", fit.weight, z_sarm, fit, l2=lam))
    start = time.perf_counter()
    fit = budget_head(z_sarm["train"], max_features)
    rows.append(row(f"SARM budget m={max_features}", fit.weight, z_sarm, fit, seconds=time.perf_counter() - start))

    sizes = {split: len(z_sarm[split]) for split in SPLITS}
    print(f"\n{cache}: pairs {sizes}; pooling {network.pooling}; {z_sarm['test'].shape[1]} SAE features")
    ms = [str(m) for m in MS]
    print(
        f"{'model':<26}{'test':>7}{'val':>7}{'nnz':>6}{'share50':>8}{'|grad|':>9}  " + " ".join(f"{m:>5}" for m in ms)
    )
    for r in rows:
        grad = "" if r["grad_norm"] is None else f"{r['grad_norm']:.0e}"
        head = f"{r['model']:<26}{r['test_accuracy']:>7.3f}{r['val_accuracy']:>7.3f}{r['nonzero']:>6}"
        head += f"{r['top50_share']:>8.3f}{grad:>9}  "
        for how in ("keep", "refit"):
            print(
                (head if how == "keep" else " " * len(head))
                + " ".join(f"{r['curve'][how][m]:>5.3f}" for m in ms)
                + f"  {how}"
            )
    write_json(root / "legibility.json", {"cache": cache, "sarm": sarm, "pairs": sizes, "ms": ms, "rows": rows})
    plot(rows, ms, root / "legibility.png", f"{Path(cache).parent.name}: test accuracy vs features kept")


def plot(rows: list[dict], ms: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(ms)))
    dense = next(r for r in rows if r["model"] == "dense (L-BFGS)")
    ax.axhline(
        dense["test_accuracy"], color="black", linestyle="--", label=f"dense (L-BFGS) {dense['test_accuracy']:.3f}"
    )
    for r in rows:
        if r["model"].startswith("dense"):
            continue
        line = ax.plot(x, [r["curve"]["keep"][m] for m in ms], marker="o", label=f"{r['model']} (keep)")[0]
        ax.plot(
            x,
            [r["curve"]["refit"][m] for m in ms],
            marker="x",
            linestyle=":",
            color=line.get_color(),
            label=f"{r['model']} (refit)",
        )
    ax.set_xticks(x, ms)
    ax.set_xlabel("features kept (top m by |mean margin contribution| on train)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    CLI(main, as_positional=False)
