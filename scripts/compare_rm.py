"""SARM against conventional reward models on the same backbone, data and test split; one table.

    python scripts/compare_rm.py --cache runs/rewardbench2/cache --sae runs/rewardbench2/sae/export [--lora] [--trl]

Every model reads the same truncated backbone (the cache's model and layer) and the same by-prompt
train/val/test split (the cache's data and split settings):

    SARM head            frozen backbone and SAE, linear head over the SAE's TopK latents (cached)
    SARM head, pre       the same head over the SAE's pre-activations (the SARM authors' recipe)
    SARM head, mean      features averaged over the response instead of read at its last token (skip: --no_mean)
    dense head           a linear head on the standardized hidden state (cached)
    SARM + LoRA          --lora: LoRA on the last --lora_layers layers + head, SAE frozen (runs the backbone),
                         starting from the "SARM head" model (stage 1 head, stage 2 LoRA)
    dense + LoRA         --lora: the same for the dense head, from the "dense head" model
    TRL RewardTrainer    --trl: AutoModelForSequenceClassification + LoRA on the same layers (scripts/trl_reward.py),
                         or --trl_result: the result.json of a run of scripts/trl_reward.py on the same split

Prints test accuracy (and per-subset accuracy when the data has subsets) and writes the table as
JSON to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import lightning as L

from sarm.cache import ActivationCache, PairActivationDataModule
from sarm.data.pairs import PairTextDataModule
from sarm.io import write_json
from sarm.reward import SARM, DenseRM


def run(name: str, module: L.LightningModule, data: L.LightningDataModule, epochs: int, root: Path) -> dict:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=str(root), num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    val = trainer.validate(module, data, verbose=False)[0]
    test = trainer.test(module, data, verbose=False)[0]
    subsets = {k.removeprefix("test/subset/"): v for k, v in test.items() if k.startswith("test/subset/")}
    row = {"model": name, "test_accuracy": test["test/accuracy"], "val_accuracy": val["val/accuracy"],
           "train_seconds": seconds, "subsets": subsets}
    print(f"done: {name}: test accuracy {row['test_accuracy']:.4f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="a `sarm cache` directory: backbone, data and split")
    parser.add_argument("--sae", required=True, help="an SAE trained on that cache")
    parser.add_argument("--epochs", type=int, default=40, help="head-only models")
    parser.add_argument("--lr", type=float, default=0.01, help="head learning rate")
    parser.add_argument("--no_mean", action="store_true", help="skip the mean-pooled variants (they encode every "
                        "response token each epoch)")
    parser.add_argument("--lora", action="store_true", help="also train the LoRA models (slow on a CPU)")
    parser.add_argument("--trl", action="store_true", help="also train TRL's RewardTrainer (slow on a CPU)")
    parser.add_argument("--trl_result", help="result.json of an earlier scripts/trl_reward.py run on this split")
    parser.add_argument("--trl_lr", type=float, default=1e-3, help="TRL's one learning rate (adapters and head)")
    parser.add_argument("--lora_epochs", type=int, default=1)
    parser.add_argument("--lora_layers", type=int, default=3)
    parser.add_argument("--backbone_lr", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per batch when the backbone runs")
    parser.add_argument("--output", default="runs/compare_rm/results.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    root = Path(args.output).parent
    settings = ActivationCache(args.cache).manifest["settings"]

    def cached(pooling: str) -> PairActivationDataModule:
        return PairActivationDataModule(args.cache, batch_size=64, pooling=pooling)

    def text() -> PairTextDataModule:
        return PairTextDataModule(data=settings["data"], num_pairs=settings["num_pairs"], seed=settings["seed"],
                                  model=settings["model"], layer=settings["layer"], max_length=settings["max_length"],
                                  split_fractions=tuple(settings["split_fractions"]), split_seed=settings["split_seed"],
                                  batch_size=args.batch_size)

    lora = {"mode": "lora", "lora_layers": args.lora_layers, "backbone_lr": args.backbone_lr}
    head_dirs = {name: str(root / name / "export") for name in ("sarm_head", "dense_head")}
    rows = [
        run("SARM head", SARM(sae=args.sae, lr=args.lr, export_dir=head_dirs["sarm_head"]), cached("last"), args.epochs,
            root),
        run("SARM head, pre", SARM(sae=args.sae, features="pre", lr=args.lr), cached("last"), args.epochs, root),
        run("dense head", DenseRM(lr=args.lr, export_dir=head_dirs["dense_head"]), cached("last"), args.epochs, root),
    ]
    if not args.no_mean:
        rows.append(run("SARM head, mean", SARM(sae=args.sae, pooling="mean", lr=args.lr), cached("mean"),
                        args.epochs, root))
        rows.append(run("dense head, mean", DenseRM(pooling="mean", lr=args.lr), cached("mean"), args.epochs, root))
    if args.lora:
        # Stage 2: the head-only models, fine-tuned with LoRA (a SARM export carries its SAE and head).
        rows.append(run("SARM + LoRA", SARM(sae=head_dirs["sarm_head"], lr=args.lr, **lora), text(), args.lora_epochs,
                        root))
        rows.append(run("dense + LoRA", DenseRM(init_from=head_dirs["dense_head"], lr=args.lr, **lora), text(),
                        args.lora_epochs, root))
    if args.trl_result:
        result = json.loads(Path(args.trl_result).read_text())
        rows.append({"model": "TRL RewardTrainer + LoRA", "test_accuracy": result["test_accuracy"],
                     "val_accuracy": result["val_accuracy"], "train_seconds": result["train_seconds"], "subsets": {}})
    elif args.trl:
        sys.path.insert(0, str(Path(__file__).parent))
        from trl_reward import train_trl_reward_model

        data = text()
        splits = {name: [data.pairs[i] for i in data.splits[name]] for name in ("train", "val", "test")}
        result = train_trl_reward_model(settings["model"], settings["layer"], splits["train"], splits["val"],
                                        splits["test"], max_length=settings["max_length"], epochs=args.lora_epochs,
                                        lr=args.trl_lr, batch_size=args.batch_size,
                                        lora_last_layers=args.lora_layers, output_dir=root / "trl")
        rows.append({"model": "TRL RewardTrainer + LoRA", "test_accuracy": result["test_accuracy"],
                     "val_accuracy": result["val_accuracy"], "train_seconds": result["train_seconds"], "subsets": {}})

    test_pairs = ActivationCache(args.cache).manifest["split_pairs"]["test"]
    print(f"\n{settings['data']}: {test_pairs} test pairs; backbone {settings['model']} layer {settings['layer']}")
    print(f"{'model':<26}{'test acc':>9}{'val acc':>9}{'train s':>9}")
    for row in rows:
        print(f"{row['model']:<26}{row['test_accuracy']:>9.4f}{row['val_accuracy']:>9.4f}{row['train_seconds']:>9.0f}")
    subsets = sorted({s for row in rows for s in row["subsets"]})
    if subsets:
        print(f"\nper-subset test accuracy\n{'model':<26}" + "".join(f"{s[:12]:>13}" for s in subsets))
        for row in rows:
            if row["subsets"]:
                print(f"{row['model']:<26}" + "".join(f"{row['subsets'].get(s, float('nan')):>13.3f}" for s in subsets))
    write_json(args.output, {"cache": args.cache, "sae": args.sae, "settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
