"""sarm's SAE trainer against SAELens's on the same cache, the same L0 and the same tokens: held-out FVU.

    .venv-peers/bin/python scripts/fvu_vs_saelens.py [--cache runs/demo/cache] [--epochs 3] [--n_latents 1024] [--k 32]

Runs in ``.venv-peers`` (``make test-peers`` builds it: SAELens 6.54.12 beside sarm, the lock's torch). Both
trainers read the train split of ``cache`` through sarm's ``TokenActivationDataModule`` (batches of
``batch_size`` tokens, a quarter of each batch last-token activations, as ``scripts/compare_sae.py``), for
``epochs`` passes: the same token count. Inputs are per-token standardized for both: sarm standardizes inside
its SAE (``input_norm: standardize``); SAELens gets the standardized batches with ``normalize_activations: none``.
Both use Adam at ``lr``, ``warmup`` linear warm-up steps and a linear decay to 0, and the same architecture and k:

    TopK        sarm ``TopKSAE`` (AuxK 1/32)     SAELens ``TopKTrainingSAE`` (its defaults: decoder init norm 0.1,
                                                 rescale_acts_by_decoder_norm, AuxK coefficient 1)
    BatchTopK   sarm ``BatchTopKSAE``            SAELens ``BatchTopKTrainingSAE`` (same defaults)

Each is then measured the same way on every val-split token (per-token standardized, sarm's
``ReconstructionMetrics`` and ``LatentFrequency``): FVU, L0 and dead fraction, with BatchTopK at inference (its
threshold), as both libraries export it. Prints one table and writes ``output``.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from jsonargparse import CLI

from sarm.cache import TokenActivationDataModule
from sarm.sae import SAEModule
from sarm.sae.base import standardize
from sarm.sae.metrics import LatentFrequency, ReconstructionMetrics
from sarm.testing import quiet_trainer


def data_module(cache: str, batch_size: int) -> TokenActivationDataModule:
    return TokenActivationDataModule(cache, batch_size=batch_size, sequence_fraction=0.25)


@torch.no_grad()
def evaluate(encode, decode, cache: str, batch_size: int, n_latents: int) -> dict:
    """FVU, L0, dead fraction over the val split; ``encode``/``decode`` act on standardized tokens."""
    data = data_module(cache, batch_size)
    reconstruction, frequency = ReconstructionMetrics(data.hidden_size), LatentFrequency(n_latents)
    for batch in data.val_dataloader():
        x = standardize(batch)
        latents = encode(x)
        reconstruction.update(x, decode(latents))
        frequency.update((latents > 0).sum(0), x.shape[0])
    metrics = {**reconstruction.compute(), **frequency.compute()}
    return {key: float(value) for key, value in metrics.items()}


def train_sarm(
    architecture: str, cache: str, epochs: int, n_latents: int, k: int, lr: float, warmup: int, batch_size: int
):
    L.seed_everything(0, verbose=False)
    module = SAEModule(architecture=architecture, n_latents=n_latents, k=k, lr=lr, warmup_steps=warmup)
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(module, data_module(cache, batch_size))
    sae = module.sae.eval()
    return sae, trainer.global_step


def train_saelens(
    architecture: str, cache: str, epochs: int, n_latents: int, k: int, lr: float, warmup: int, batch_size: int
):
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    data = data_module(cache, batch_size)
    data.setup("fit")
    sizes = [len(batch) for _ in range(epochs) for batch in data.train_dataloader()]

    def batches():
        for _ in range(epochs):
            for batch in data.train_dataloader():
                yield standardize(batch)
        while True:  # SAELens may ask once more after the last counted batch
            yield standardize(batch)

    common = {"d_in": data.hidden_size, "d_sae": n_latents, "k": k, "normalize_activations": "none"}
    if architecture == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common))
    else:
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common))
    steps = len(sizes)
    config = SAETrainerConfig(
        total_training_samples=sum(sizes),
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=0.0,
        lr_scheduler_name="constant",
        lr_warm_up_steps=warmup,
        lr_decay_steps=steps - warmup,
        dead_feature_window=max(1, 100_000 // batch_size),
        feature_sampling_window=max(1, steps),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(config, sae, batches())
    trainer.fit()
    # As SAELens exports it: its inference SAE (BatchTopK becomes jumprelu with its running threshold; a training
    # BatchTopK SAE would still select over the batch)
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as directory:
        sae.save_inference_model(directory)
        inference = SAE.load_from_disk(directory).eval()
    return inference, trainer.n_training_steps, sum(sizes)


def main(
    cache: str = "runs/demo/cache",
    output: str = "runs/compare_sae/fvu_vs_saelens.json",
    epochs: int = 3,
    n_latents: int = 1024,
    k: int = 32,
    lr: float = 1e-3,
    warmup: int = 20,
    batch_size: int = 1024,
    architectures: list[str] = ["topk", "batchtopk"],  # noqa: B006 (jsonargparse reads the default)
) -> None:
    """Train sarm's and SAELens's TopK and BatchTopK SAEs on the same tokens; print held-out FVU, L0, dead %.

    Args:
        cache: a `sarm cache` directory.
        output: the JSON written.
        epochs: passes over the train split (the same for both trainers).
        n_latents: dictionary size.
        k: TopK / BatchTopK budget.
        lr: Adam learning rate (peak).
        warmup: linear warm-up steps; then linear decay to 0.
        batch_size: tokens per batch.
        architectures: which of topk, batchtopk to run (rows already in ``output`` are kept).
    """
    warnings.filterwarnings("ignore")
    rows = json.loads(Path(output).read_text()) if Path(output).exists() else {}
    for architecture in architectures:
        start = time.perf_counter()
        sae, steps = train_sarm(architecture, cache, epochs, n_latents, k, lr, warmup, batch_size)
        seconds = time.perf_counter() - start
        metrics = evaluate(lambda x, sae=sae: sae.reconstruct(x).latents, sae.decode, cache, batch_size, n_latents)
        rows[f"sarm {architecture}"] = {**metrics, "steps": steps, "seconds": seconds}
        print(f"sarm {architecture}: {rows[f'sarm {architecture}']}", flush=True)

        start = time.perf_counter()
        theirs, steps, tokens = train_saelens(architecture, cache, epochs, n_latents, k, lr, warmup, batch_size)
        seconds = time.perf_counter() - start
        metrics = evaluate(theirs.encode, theirs.decode, cache, batch_size, n_latents)
        rows[f"SAELens {architecture}"] = {**metrics, "steps": steps, "tokens": tokens, "seconds": seconds}
        print(f"SAELens {architecture}: {rows[f'SAELens {architecture}']}", flush=True)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(rows, indent=2))
    print("\n| trainer | architecture | FVU | L0 | dead % | steps | train s |\n|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        who, architecture = name.split(" ")
        print(
            f"| {who} | {architecture} | {row['fvu']:.4f} | {row['l0']:.1f} | {100 * row['dead_fraction']:.1f} "
            f"| {row['steps']} | {row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    CLI(main, as_positional=False)
