"""Memory bound: peak RSS of `sarm attribute` (caching + attribution) is flat in the dataset's size.

    python scripts/bench_memory.py [--sizes [5000,50000]] [--max_length 64]

For each size N, N built-in planted pairs are generated into a JSONL file (by this script: the
generator builds its rows in memory to shuffle them, which is the generator's cost, not sarm's), then
one fresh `sarm attribute` process reads that file, caches the hidden states through a tiny random
model (``sarm.testing``) and attributes a random SARM's rewards over all of the pairs. Its peak resident
set size comes from ``wait4`` (the kernel's own high-water mark for that process). The script prints each
run's peak RSS and the ratio of the largest to the smallest; a ratio near 1 means memory is bounded by the
shard and batch sizes, not by N.

Everything is written under a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from jsonargparse import CLI

from sarm.data.planted import generate_planted_pairs
from sarm.reward.export import save_reward_model
from sarm.reward.network import SARMNetwork
from sarm.sae.topk import TopKSAE
from sarm.testing import save_tiny_model

LAYER = 2


def tiny_sarm(directory: Path, model_dir: str, max_length: int) -> Path:
    """A random TopK SAE + head over the tiny model's layer-2 states, exported like a trained SARM."""
    torch.manual_seed(0)
    network = SARMNetwork(TopKSAE(d_in=32, n_latents=256, k=16), pooling="mean")
    torch.nn.init.normal_(network.head.weight)
    return save_reward_model(directory, network, {"model": model_dir, "layer": LAYER, "max_length": max_length})


def peak_rss(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` to completion; return (peak RSS in MiB, seconds)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {process.returncode}); its output:\n{log.read_text()[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # Linux reports KiB


def main(sizes: tuple[int, ...] = (5000, 50000), max_length: int = 64) -> None:
    """Peak RSS of one `sarm attribute` process per dataset size, and the largest / smallest ratio.

    Args:
        sizes: numbers of generated planted pairs, one `sarm attribute` run each.
        max_length: the tiny SARM's backbone ``max_length`` (tokens per sequence).
    """

    sarm = Path(sys.executable).with_name("sarm")
    with tempfile.TemporaryDirectory(prefix="sarm-bench-memory-") as root:
        root = Path(root)
        model_dir = save_tiny_model(root / "model", num_layers=4)
        export = tiny_sarm(root / "sarm", model_dir, max_length)
        results = []
        for n in sizes:
            data = root / f"pairs-{n}.jsonl"
            with open(data, "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in generate_planted_pairs(n, seed=0))
            command = [
                str(sarm),
                "attribute",
                "--sarm",
                str(export),
                "--data",
                str(data),
                "--split",
                "all",
                "--cache_dir",
                str(root / f"cache-{n}"),
                "--output",
                str(root / f"attribution-{n}"),
            ]
            rss, seconds = peak_rss(command, root / f"log-{n}.txt")
            tokens = json.loads((root / f"cache-{n}" / "manifest.json").read_text())["num_tokens"]
            results.append((n, rss))
            print(f"{n:>7,} pairs  {tokens:>11,} cached tokens  peak RSS {rss:7.1f} MiB  ({seconds:.0f} s)", flush=True)
    (small, rss_small), (large, rss_large) = min(results), max(results)
    print(
        f"peak RSS ratio {large:,} / {small:,} pairs: {rss_large / rss_small:.3f} "
        f"(dataset {large / small:.0f}x larger; flat means ≤ 1.20)"
    )


if __name__ == "__main__":
    CLI(main, as_positional=False)
