"""SAE training-step throughput: sarm's TopK SAE (sparse decode: embedding_bag over the k active rows)
against the dense reference (dense latents @ W_dec, as the base class and most libraries decode),
measured in the same run on the same weights. Prints tokens/s and the ratio.

    python scripts/bench_sae.py [--d_in 576] [--k 64] [--batch 1024] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from sarm.sae import TopKSAE
from sarm.sae.base import SparseAutoencoder


def dense_step(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    """The dense reference: the base class's reconstruct (scatter to [batch, n], then matmul)."""
    out = SparseAutoencoder.reconstruct(sae, x)
    return (out.x - out.x_hat).pow(2).sum(-1).mean()


def sparse_step(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    out = sae.reconstruct(x)  # sarm's TopK path
    return (out.x - out.x_hat).pow(2).sum(-1).mean()


def throughput(step, sae: TopKSAE, x: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            start = time.perf_counter()
        optimizer.zero_grad()
        step(sae, x).backward()
        optimizer.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d_in", type=int, default=576)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d_in)
    print(f"{'n_latents':>10} {'dense tok/s':>12} {'sarm tok/s':>13} {'sarm/dense':>13}")
    for n in (2048, 8192, 32768):
        sae = TopKSAE(args.d_in, n, args.k, input_norm="none")
        dense = throughput(dense_step, sae, x, args.steps)
        sparse = throughput(sparse_step, sae, x, args.steps)
        print(f"{n:>10} {dense:>12,.0f} {sparse:>13,.0f} {sparse / dense:>12.2f}x")


if __name__ == "__main__":
    main()
