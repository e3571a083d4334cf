"""The residualized SARM against the dense and the budget SARM heads on one cache; one table.

    python scripts/residual.py --cache runs/demo/cache --sarm runs/demo/sarm/export \\
        [--output runs/residual] [--export_dir runs/demo/residual/export]

Every row reads the same cache, split and pooling (the SARM export's SAE and pooling; the dense features are the
standardized hidden states pooled the same way):

    dense (L-BFGS)              the converged full-batch fit on the pooled hidden states (λ chosen on val)
    SARM budget m=50            ``sarm.reward.fit.budget_head`` (what ``SARM(max_features=50)`` exports)
    residual SARM m=50          ``sarm.reward.residual``: that budget head + a dense residual v · h̃; μ: among those
                                with val feature share ≥ ``--min_share``, the largest whose val accuracy reaches the
                                dense row's, else the best val accuracy (``select_residual_l2``)

Columns: test and val accuracy, non-zero feature weights, ‖v‖₂ of the residual, and the feature share
(``sarm.reward.residual.feature_share``) on test and val. Below it, the μ sweep on val. Pooled features are kept beside
the cache (``sarm.reward.pooled``). Writes ``<output>/residual.json`` and the chosen fit's w and v
(``<output>/residual_head.safetensors``: ``feature_weight`` [n_features], ``residual_weight`` [hidden]).
With ``--export_dir``, the chosen fit is also exported as a reward model of kind ``residual_sarm``
(``sarm.reward.export``: the SARM export's SAE, pooling and backbone; val feature share and the residual row's
metrics in ``sarm.json``), which ``sarm score`` reads like any other.
"""

from __future__ import annotations

import time

import torch
from jsonargparse import CLI
from legibility import prepare

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.reward.export import read_config, save_reward_model
from sarm.reward.fit import (
    SPLITS,
    best_l2_fit,
    budget_head,
    pair_accuracy,
)
from sarm.reward.residual import ResidualSARMNetwork, feature_share, select_residual_l2


def main(
    cache: str,
    sarm: str,
    max_features: int = 50,
    min_share: float = 0.8,
    output: str = "runs/residual",
    threads: int = 1,
    export_dir: str | None = None,
) -> None:
    """Measure dense, budget SARM and residualized SARM heads on one cache; print one table.

    Args:
        cache: a `sarm cache` directory (the split and pooled features of every row).
        sarm: an exported SARM trained on that cache (its SAE and pooling).
        max_features: m, the feature budget of the budget and residualized heads.
        min_share: the val feature-share floor of the residual's μ (``select_residual_l2``).
        output: directory for residual.json and residual_head.safetensors.
        threads: torch CPU threads.
        export_dir: also export the chosen fit here as a ``residual_sarm`` reward model (``sarm score`` reads it).
    """
    backbone = dict(read_config(sarm)["backbone"])
    if export_dir is not None and backbone.pop("weights", "reference") != "reference":
        raise SarmInputError(f"{sarm}: --export_dir needs a SARM on a frozen backbone (its weights are referenced)")
    root, network, features = prepare(cache, sarm, output, threads)
    z, h = features["sarm"], features["dense"]

    lam, dense = best_l2_fit(h)
    budget = budget_head(z["train"], max_features)
    dense_val = pair_accuracy(h["val"], dense.weight)
    start = time.perf_counter()
    residual, sweep = select_residual_l2(z, h, max_features, target_accuracy=dense_val, min_share=min_share)
    seconds = time.perf_counter() - start

    def accuracy(split: str, w: torch.Tensor | None, v: torch.Tensor | None) -> float:
        margin = torch.zeros(len(z[split]), dtype=torch.float64)
        if w is not None:
            margin = margin + z[split].double() @ w.double()
        if v is not None:
            margin = margin + h[split].double() @ v.double()
        return float((margin > 0).double().mean())

    def share(split: str, w: torch.Tensor | None, v: torch.Tensor | None) -> float:
        a = torch.zeros(len(z[split])) if w is None else z[split] @ w
        b = torch.zeros(len(z[split])) if v is None else h[split] @ v
        return feature_share(a, b)

    heads = [
        ("dense (L-BFGS)", None, dense.weight, {"l2": lam}),
        (f"SARM budget m={max_features}", budget.weight, None, {}),
        (
            f"residual SARM m={max_features}",
            residual.feature.weight,
            residual.residual.weight,
            {"residual_l2": residual.residual_l2, "converged": residual.residual.converged, "seconds": seconds},
        ),
    ]
    rows = []
    for name, w, v, extra in heads:
        rows.append(
            {
                "model": name,
                "test_accuracy": accuracy("test", w, v),
                "val_accuracy": accuracy("val", w, v),
                "nonzero_features": None if w is None else int((w != 0).sum()),
                "residual_norm": 0.0 if v is None else float(v.norm()),
                "test_share": share("test", w, v),
                "val_share": share("val", w, v),
                **extra,
            }
        )

    sizes = {split: len(z[split]) for split in SPLITS}
    print(f"\n{cache}: pairs {sizes}; pooling {network.pooling}; {z['test'].shape[1]} SAE features")
    print(f"{'model':<24}{'test':>7}{'val':>7}{'nnz':>6}{'‖v‖':>9}{'share test':>12}{'share val':>11}")
    for r in rows:
        nnz = "" if r["nonzero_features"] is None else str(r["nonzero_features"])
        print(
            f"{r['model']:<24}{r['test_accuracy']:>7.3f}{r['val_accuracy']:>7.3f}{nnz:>6}{r['residual_norm']:>9.3f}"
            f"{r['test_share']:>12.3f}{r['val_share']:>11.3f}"
        )
    print(
        f"residual μ = {residual.residual_l2:g} (val share ≥ {min_share}, then the largest μ with val accuracy ≥ dense"
        f" {dense_val:.3f}, else the best val accuracy); the sweep (test shown, not used by the choice):"
    )
    table = []
    for fit, r in sweep:
        r = {**r, "test_accuracy": fit.accuracy(z["test"], h["test"]), "test_share": fit.share(z["test"], h["test"])}
        table.append(r)
        print(
            f"  μ = {r['residual_l2']:<8g} val {r['val_accuracy']:.3f} share {r['val_share']:.3f}"
            f"   test {r['test_accuracy']:.3f} share {r['test_share']:.3f}"
        )
    # the chosen fit's weights, so an export can be built from them without refitting
    save_tensors(
        root / "residual_head.safetensors",
        {"feature_weight": residual.feature.weight, "residual_weight": residual.residual.weight},
    )
    write_json(root / "residual.json", {"cache": cache, "sarm": sarm, "pairs": sizes, "rows": rows, "sweep": table})
    if export_dir is not None:
        chosen = rows[-1]
        save_reward_model(
            export_dir,
            ResidualSARMNetwork.from_fit(network, residual),  # writes w into the SARM's head, in place
            backbone,
            metrics={k: chosen[k] for k in ("test_accuracy", "val_accuracy", "test_share", "val_share")}
            | {"residual_l2": residual.residual_l2, "max_features": max_features},
            feature_share=chosen["val_share"],
        )
        print(f"exported the residualized SARM -> {export_dir}")


if __name__ == "__main__":
    CLI(main, as_positional=False)
