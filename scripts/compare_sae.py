"""Train every SAE architecture and variant for the same token budget on one cache; measure them as the field does.

    python scripts/compare_sae.py [--cache runs/demo/cache] [--epochs 3] [--n_latents 1024] [--k 32]
                                  [--probe_cache runs/hh/cache] [--output runs/compare_sae]

Variants: TopK, BatchTopK, Matryoshka BatchTopK, JumpReLU, ReLU-L1, ReLU with p-annealing, TopK + adaptive
temporal masking (ATM), TopK on whitened inputs. All see the same batches for the same epochs (equal token
budget); the k-based ones keep k latents per token (TopK, ATM, whitened) or on average (BatchTopK, Matryoshka) and
JumpReLU's quadratic L0 loss targets k, so their L0 match; the ReLU variants' L0 follows from ``l1`` and is
reported, not matched.

Columns, each from the exported SAE (whitening folded in) or the module's held-out metrics:
    FVU, L0, dead %, dense %     val split of ``cache`` (``SAEModule``'s torchmetrics)
    coverage                     planted-attribute coverage (``PlantedCoverage``), when the cache is planted data
    absorption, full abs.        first-letter absorption fraction and full-absorption rate (``sarm.sae.absorption``)
                                 on the backbone's activations of ``words_per_letter`` single-token words per letter
    planted k=1 / k=5            mean test F1 of 1- and 5-sparse probes over the planted properties, on each
                                 response's last-token latents (``sarm.sae.sparse_probing``)
    RB2 k=1 / k=5                the same for chosen vs rejected on ``probe_cache`` (RewardBench 2 safety), read by
                                 the SAEs trained on ``cache`` (same backbone and layer)
Everything is written to ``output/results.json``; each SAE to ``output/<variant>/export``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning as L
from jsonargparse import CLI

from sarm.cache import ActivationCache, TokenActivationDataModule
from sarm.callbacks import AdaptiveTemporalMasking, PAnnealing
from sarm.callbacks.coverage import PlantedCoverage
from sarm.io import save_tensors
from sarm.sae import SAEModule, load_sae
from sarm.sae.absorption import absorption, first_letter_words, letter_probes, word_activations, word_splits
from sarm.sae.coverage import planted_labels
from sarm.sae.sparse_probing import chosen_labels, pooled_latents, response_splits, sparse_probing
from sarm.testing import quiet_trainer


def variants(n_latents: int, k: int, l1: float) -> dict[str, tuple[dict, list]]:
    topk = {"architecture": "topk", "n_latents": n_latents, "k": k}
    relu = {"architecture": "relu", "n_latents": n_latents, "sparsity_coefficient": l1, "auxk_coefficient": 0.0}
    return {
        "TopK": (topk, []),
        "BatchTopK": ({**topk, "architecture": "batchtopk"}, []),
        "Matryoshka": ({**topk, "architecture": "matryoshka_batchtopk"}, []),
        "JumpReLU": ({**topk, "architecture": "jumprelu", "sparsity_coefficient": 0.01}, []),
        "ReLU-L1": (relu, []),
        "ReLU p-anneal": (relu, [PAnnealing(p_start=1.0, p_end=0.2, n_updates=10, anneal_start=0.27)]),
        "TopK + ATM": (topk, [AdaptiveTemporalMasking(warmup_steps=100, update_every=10)]),
        "TopK whitened": ({**topk, "whitening": True}, []),
    }


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def train(name: str, config: dict, callbacks: list, cache: str, epochs: int, batch_size: int, export: Path) -> dict:
    L.seed_everything(0, verbose=False)
    module = SAEModule(lr=1e-3, warmup_steps=20, dead_after_tokens=100_000, export_dir=str(export), **config)
    data = TokenActivationDataModule(cache, batch_size=batch_size, sequence_fraction=0.25)
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[*callbacks, PlantedCoverage()])
    start = time.perf_counter()
    trainer.fit(module, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {**metrics, "seconds": time.perf_counter() - start, "train_steps": trainer.global_step}


def first_letter_data(model: str, layer: int, per_letter: int, path: Path) -> dict:
    """Words, their letters and hidden states (computed once, kept at ``path``: safetensors, the words in its
    metadata)."""
    if path.exists():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            words = json.loads(f.metadata()["words"])
            return {"words": words, "letters": [w[0] for w in words], "x": f.get_tensor("x")}
    from sarm.backbone import TruncatedBackbone, load_tokenizer

    tokenizer = load_tokenizer(model)
    words = first_letter_words(tokenizer, per_letter=per_letter)
    backbone = TruncatedBackbone(model, layer=layer).eval()
    start = time.perf_counter()
    x = word_activations(backbone, tokenizer, words)
    print(f"first-letter data: {len(words)} words in {time.perf_counter() - start:.0f} s", flush=True)
    data = {"words": [w for w, _ in words], "letters": [w[0] for w, _ in words], "x": x}
    save_tensors(path, {"x": x}, metadata={"words": json.dumps(data["words"])})
    return data


def main(
    cache: str = "runs/demo/cache",
    probe_cache: str | None = "runs/hh/cache",
    output: str = "runs/compare_sae",
    epochs: int = 3,
    n_latents: int = 1024,
    k: int = 32,
    l1: float = 0.005,
    batch_size: int = 1024,
    words_per_letter: int = 40,
    only: list[str] | None = None,
) -> None:
    """Train every SAE variant on ``cache`` for the same token budget, measure each, print one table.

    Args:
        cache: a `sarm cache` directory (the demo's planted data: coverage and planted probing).
        probe_cache: a second cache of the same backbone and layer for chosen-vs-rejected probing (RewardBench 2
            safety); null skips it.
        output: where exports and results.json go.
        epochs: training epochs of every variant (equal token budget).
        n_latents: SAE latents.
        k: active latents per token for the k-based variants (JumpReLU's target L0).
        l1: sparsity coefficient of the ReLU variants.
        batch_size: tokens per batch.
        words_per_letter: single-token words per letter for the absorption protocol.
        only: train and measure only these variants (names as printed).
    """
    warnings.filterwarnings("ignore")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    source = ActivationCache(cache)
    settings = source.manifest
    words = first_letter_data(settings["model"], settings["layer"], words_per_letter, out / "first_letter.safetensors")
    splits = word_splits(len(words["letters"]))
    planted = planted_labels(source.pairs)
    planted = {name: y for name, y in planted.items() if y.any()}
    probing = [("planted", source, planted, response_splits(source.pairs))] if planted else []
    if probe_cache is not None and Path(probe_cache).exists():
        other = ActivationCache(probe_cache)
        if (other.manifest["model"], other.manifest["layer"]) != (settings["model"], settings["layer"]):
            raise ValueError(f"{probe_cache} holds another backbone or layer than {cache}")
        probing.append(("rb2", other, chosen_labels(other.pairs), response_splits(other.pairs)))
    probes = None
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for name, (config, callbacks) in variants(n_latents, k, l1).items():
        if only is not None and name not in only:
            continue
        export = out / slug(name) / "export"
        row = train(name, config, callbacks, cache, epochs, batch_size, export)
        sae = load_sae(export)
        start = time.perf_counter()
        if probes is None:  # every variant standardizes its input: one set of ground-truth letter probes
            probes = letter_probes(sae.preprocess(words["x"]), words["letters"], splits)
        scores = absorption(sae, words["x"], words["letters"], splits, probes)
        row["absorption"] = {key: scores[key] for key in ("fraction", "full", "letters")}
        for label, data, labels, response_rows in probing:
            row[f"{label}_probing"] = sparse_probing(pooled_latents(sae, data), labels, response_rows)["mean"]
        row["quality_seconds"] = time.perf_counter() - start
        results[name] = row
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(f"done: {name} ({row['seconds']:.0f} s training, {row['quality_seconds']:.0f} s measuring)", flush=True)
    print_table(results, tokens=None)


def print_table(results: dict, tokens: int | None) -> None:
    def number(value, form):
        return "-" if value is None else format(value, form)

    header = (
        f"| {'variant':<14} | FVU    | L0    | dead % | dense % | coverage | absorption | full abs. "
        "| planted k=1 | planted k=5 | RB2 k=1 | RB2 k=5 | train s |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, row in results.items():
        planted, rb2 = row.get("planted_probing", {}), row.get("rb2_probing", {})
        cells = [
            f"{name:<14}",
            number(row.get("val/fvu"), ".4f"),
            number(row.get("val/l0"), ".1f"),
            number(100 * row["val/dead_fraction"], ".1f") if "val/dead_fraction" in row else "-",
            number(100 * row["val/dense_fraction"], ".1f") if "val/dense_fraction" in row else "-",
            number(row.get("val/coverage"), ".3f"),
            number(row["absorption"]["fraction"], ".3f"),
            number(row["absorption"]["full"], ".3f"),
            number(planted.get("sparse1_f1"), ".3f"),
            number(planted.get("sparse5_f1"), ".3f"),
            number(rb2.get("sparse1_f1"), ".3f"),
            number(rb2.get("sparse5_f1"), ".3f"),
            number(row.get("seconds"), ".0f"),
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    CLI(main, as_positional=False)
