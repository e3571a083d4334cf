"""Print the demo's headline figures and plot its top features (reads the files the demo wrote).

python scripts/demo_summary.py runs/demo
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from jsonargparse import CLI


def main(run: Path) -> None:
    """Print the headline figures of a demo run and plot its top features.

    Args:
        run: the demo's run directory (``runs/demo``): its ``cache``, ``sae/export`` and ``attribution``.
    """
    manifest = json.loads((run / "cache" / "manifest.json").read_text())
    sae = json.loads((run / "sae" / "export" / "metrics.json").read_text())
    attribution = json.loads((run / "attribution" / "features.json").read_text())
    pairs_meta = [json.loads(line) for line in open(run / "cache" / "pairs.jsonl")]
    with open(run / "attribution" / "pairs.csv") as f:
        scored = list(csv.DictReader(f))

    by_attribute = defaultdict(list)
    for row in scored:
        by_attribute[pairs_meta[int(row["pair"])]["meta"].get("attribute", "-")].append(row["correct"] == "True")

    summary = attribution["summary"]
    print("\n================ sarm demo ================")
    print(f"backbone            {manifest['model']} (layer {manifest['layer']}, hidden {manifest['hidden_size']})")
    print(
        f"tokens cached       {manifest['num_tokens']:,} ({manifest['num_pairs']:,} pairs, "
        f"split {manifest['split_pairs']})"
    )
    print(
        f"SAE held-out        FVU {sae['val/fvu']:.4f}   L0 {sae['val/l0']:.1f}   dead {sae['val/dead_fraction']:.1%}"
        + (f"   planted coverage {sae['val/coverage']:.3f}" if "val/coverage" in sae else "")
    )
    print(
        f"SARM held-out       pairwise accuracy {summary['accuracy']:.4f} on {summary['pairs']} test pairs "
        f"(head weights non-zero: {summary['head_nonzero']})"
    )
    print("accuracy by planted attribute:")
    for name, hits in sorted(by_attribute.items()):
        print(f"  {name:<14} {sum(hits) / len(hits):.3f}  ({len(hits)} pairs)")
    print("top 10 features by mean contribution to the chosen-rejected margin:")
    print(f"  {'feature':>7} {'margin contrib':>15} {'share':>7} {'freq chosen':>12} {'freq rejected':>14}")
    top = attribution["features"][:10]  # sorted by mean margin contribution, largest first
    for r in top:
        print(
            f"  {r['feature']:>7} {r['mean_margin_contribution']:>15.4f} {r['margin_share']:>7.1%} "
            f"{r['freq_chosen']:>12.1%} {r['freq_rejected']:>14.1%}"
        )
    plot = _plot_top(top, run / "attribution" / "top_features.png")
    print(f"plot: {plot}\nfiles: {run / 'attribution'}")


def _plot_top(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"#{r['feature']}" for r in rows][::-1]
    values = [r["mean_margin_contribution"] for r in rows][::-1]
    ax.barh(labels, values, color=["tab:green" if v > 0 else "tab:red" for v in values])
    ax.set_xlabel("mean contribution to r(chosen) − r(rejected)")
    ax.set_title("SARM: top features by margin attribution (test pairs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    CLI(main)
