"""Ground-truth recovery of a SARM trained on the built-in planted-attribute data (sarm/attribution/recovery.py).

    python scripts/recovery.py [--sarm runs/demo/sarm/export] [--cache runs/demo/cache] [--split test]

Prints, per deciding attribute: its pairs' accuracy, the top-3 features by |mean margin contribution|
on those pairs with each one's F1 as a classifier of the attribute (over all responses, and within
the attribute's own pairs), and the accuracy and mean margin on those pairs after zeroing the top
feature and after zeroing all three, and the best F1 that any feature of the SAE reaches (attributed
or not); then the distractors' share of the margin attribution.
"""

from __future__ import annotations

import argparse

from sarm.attribution import collect_pair_features, planted_recovery
from sarm.cache import PairActivationDataModule
from sarm.io import write_json
from sarm.reward.export import load_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sarm", default="runs/demo/sarm/export")
    parser.add_argument("--cache", default="runs/demo/cache")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    network, config = load_network(args.sarm)
    data = PairActivationDataModule(args.cache, batch_size=256, predict_split=args.split, pooling=config["pooling"])
    features = collect_pair_features(network, data.predict_dataloader())
    result = planted_recovery(network, features, data.cache.pairs)

    print(f"{'attribute':<12}{'pairs':>6}{'acc':>7}  {'top-3 features (F1 all responses / within its pairs)':<58}"
          f"{'zero top-1: acc, margin':>25}{'zero top-3: acc, margin':>25}{'any feature':>13}")
    for row in result["attributes"]:
        top = ", ".join(f"{f} ({a:.2f}/{b:.2f})" for f, a, b in zip(row["features"], row["f1"], row["f1_within"]))
        one = f"{row['accuracy_zeroed']:.3f}, {row['margin_zeroed']:.2f}/{row['margin_before']:.2f}"
        three = f"{row['accuracy_zeroed_top']:.3f}, {row['margin_zeroed_top']:.2f}/{row['margin_before']:.2f}"
        ceiling = f"{row['ceiling_f1']:.2f}/{row['ceiling_f1_within']:.2f}"
        print(f"{row['attribute']:<12}{row['pairs']:>6}{row['accuracy_before']:>7.3f}  {top:<58}{one:>25}{three:>25}"
              f"{ceiling:>13}")
    print(f"distractors {', '.join(result['distractors'])}: detected by features {result['distractor_features']}, "
          f"carrying {result['distractor_share']:.2%} of the margin attribution")
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
