"""SARM against conventional reward models on the same backbone, data and test split; one table.

    python scripts/compare_rm.py --cache runs/rewardbench2/cache --sae runs/rewardbench2/sae/export \\
        [--lora true] [--trl true]

Every model reads the same truncated backbone (the cache's model and layer) and the same by-prompt
train/val/test split (the cache's data and split settings):

    SARM head            frozen backbone and SAE, linear head over the SAE's TopK latents (cached)
    SARM head, pre       the same head over the SAE's pre-activations (the SARM authors' recipe)
    SARM head, mean      features averaged over the response instead of read at its last token (skip: --no_mean true)
    dense head           a linear head on the standardized hidden state (cached)
    SARM + LoRA          --lora true: LoRA on the last --lora_layers layers + head, SAE frozen (runs the backbone),
                         starting from the "SARM head" model (stage 1 head, stage 2 LoRA)
    dense + LoRA         --lora true: the same for the dense head, from the "dense head" model
    TRL RewardTrainer    --trl true: AutoModelForSequenceClassification + LoRA on the same layers
                         (scripts/trl_reward.py), or --trl_result: the result.json of a run of
                         scripts/trl_reward.py on the same split

Prints test accuracy (and per-subset accuracy when the data has subsets) and writes the table as
JSON to --output.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from jsonargparse import CLI

from sarm.cache import ActivationCache, PairActivationDataModule
from sarm.data.pairs import PairTextDataModule
from sarm.io import write_json
from sarm.reward import SARM, DenseRM


def run(name: str, module: L.LightningModule, data: L.LightningDataModule, epochs: int, root: Path) -> dict:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    val = trainer.validate(module, data, verbose=False)[0]
    test = trainer.test(module, data, verbose=False)[0]
    subsets = {k.removeprefix("test/subset/"): v for k, v in test.items() if k.startswith("test/subset/")}
    row = {
        "model": name,
        "test_accuracy": test["test/accuracy"],
        "val_accuracy": val["val/accuracy"],
        "train_seconds": seconds,
        "subsets": subsets,
    }
    print(f"done: {name}: test accuracy {row['test_accuracy']:.4f}", flush=True)
    return row


def main(
    cache: str,
    sae: str,
    epochs: int = 40,
    lr: float = 0.01,
    no_mean: bool = False,
    lora: bool = False,
    trl: bool = False,
    trl_result: str | None = None,
    trl_lr: float = 1e-3,
    lora_epochs: int = 1,
    lora_layers: int = 3,
    backbone_lr: float = 1e-4,
    batch_size: int = 8,
    output: str = "runs/compare_rm/results.json",
) -> None:
    """Train SARM variants and conventional reward models on one cache's backbone and split; print one table.

    Args:
        cache: a `sarm cache` directory: backbone, data and split.
        sae: an SAE trained on that cache.
        epochs: epochs of the head-only models.
        lr: head learning rate.
        no_mean: skip the mean-pooled variants (they encode every response token each epoch).
        lora: also train the LoRA models (slow on a CPU).
        trl: also train TRL's RewardTrainer (slow on a CPU).
        trl_result: result.json of an earlier scripts/trl_reward.py run on this split.
        trl_lr: TRL's one learning rate (adapters and head).
        lora_epochs: epochs of the LoRA and TRL models.
        lora_layers: LoRA on this many last layers.
        backbone_lr: learning rate of the LoRA adapters.
        batch_size: pairs per batch when the backbone runs.
        output: the table, as JSON.
    """
    warnings.filterwarnings("ignore")
    root = Path(output).parent
    settings = ActivationCache(cache).manifest["settings"]

    def cached(pooling: str) -> PairActivationDataModule:
        return PairActivationDataModule(cache, batch_size=64, pooling=pooling)

    def text() -> PairTextDataModule:
        return PairTextDataModule(
            data=settings["data"],
            num_pairs=settings["num_pairs"],
            seed=settings["seed"],
            model=settings["model"],
            layer=settings["layer"],
            max_length=settings["max_length"],
            split_fractions=tuple(settings["split_fractions"]),
            split_seed=settings["split_seed"],
            batch_size=batch_size,
        )

    lora_settings = {"mode": "lora", "lora_layers": lora_layers, "backbone_lr": backbone_lr}
    head_dirs = {name: str(root / name / "export") for name in ("sarm_head", "dense_head")}
    rows = [
        run("SARM head", SARM(sae=sae, lr=lr, export_dir=head_dirs["sarm_head"]), cached("last"), epochs, root),
        run("SARM head, pre", SARM(sae=sae, features="pre", lr=lr), cached("last"), epochs, root),
        run("dense head", DenseRM(lr=lr, export_dir=head_dirs["dense_head"]), cached("last"), epochs, root),
    ]
    if not no_mean:
        rows.append(run("SARM head, mean", SARM(sae=sae, pooling="mean", lr=lr), cached("mean"), epochs, root))
        rows.append(run("dense head, mean", DenseRM(pooling="mean", lr=lr), cached("mean"), epochs, root))
    if lora:
        # Stage 2: the head-only models, fine-tuned with LoRA (a SARM export carries its SAE and head).
        rows.append(
            run(
                "SARM + LoRA", SARM(init_from=head_dirs["sarm_head"], lr=lr, **lora_settings), text(), lora_epochs, root
            )
        )
        rows.append(
            run(
                "dense + LoRA",
                DenseRM(init_from=head_dirs["dense_head"], lr=lr, **lora_settings),
                text(),
                lora_epochs,
                root,
            )
        )
    if trl_result:
        result = json.loads(Path(trl_result).read_text())
    elif trl:
        sys.path.insert(0, str(Path(__file__).parent))
        from trl_reward import train_trl_reward_model

        data = text()
        splits = {name: [data.pairs[i] for i in data.splits[name]] for name in ("train", "val", "test")}
        result = train_trl_reward_model(
            settings["model"],
            settings["layer"],
            splits["train"],
            splits["val"],
            splits["test"],
            max_length=settings["max_length"],
            epochs=lora_epochs,
            lr=trl_lr,
            batch_size=batch_size,
            lora_last_layers=lora_layers,
            output_dir=root / "trl",
        )
    if trl_result or trl:
        rows.append(
            {
                "model": "TRL RewardTrainer + LoRA",
                "test_accuracy": result["test_accuracy"],
                "val_accuracy": result["val_accuracy"],
                "train_seconds": result["train_seconds"],
                "subsets": {},
            }
        )

    test_pairs = ActivationCache(cache).manifest["split_pairs"]["test"]
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
    write_json(output, {"cache": cache, "sae": sae, "settings": settings, "rows": rows})


if __name__ == "__main__":
    CLI(main, as_positional=False)
