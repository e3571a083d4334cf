"""The three choices inside sarm's TopK SAE step, each timed against the alternative it replaced, in one run:

    sum_by_latent   Sᵀ·rows for the sparse [batch, n] TopK matrix S (the W_enc and W_dec gradients):
                    one embedding_bag grouped by latent (sarm/sae/kernels.py) vs torch.sparse.mm
    encoder chunks  the TopK encoder in row chunks of ~32 MiB of pre-activations (kernels.CHUNK_ELEMENTS)
                    vs one [batch, n] product
    fused Adam      torch.optim.Adam(fused=True) over the SAE's parameters vs the per-parameter loop

    python scripts/bench_kernels.py [--d_in 576] [--n_latents 8192] [--k 32] [--batch 4096] [--repeats 7]

Each row: median milliseconds of sarm's choice and of the alternative (timings interleaved), and the
alternative / sarm ratio (above 1: sarm's choice is faster).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from jsonargparse import CLI

from sarm.sae import kernels


def _median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def bench_kernels(
    d_in: int = 576, n_latents: int = 8192, k: int = 32, batch: int = 4096, repeats: int = 7, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Time sarm's kernel choices against the alternatives (shapes: ``batch`` tokens of width ``d_in``)."""
    torch.manual_seed(seed)
    x = torch.randn(batch, d_in)
    W_enc = torch.randn(d_in, n_latents) / d_in**0.5
    b_enc, b_dec = torch.zeros(n_latents), torch.zeros(d_in)
    values, indices = kernels.topk_encode(x, b_dec, W_enc, b_enc, k)
    rows = torch.randn(batch, d_in)

    def sparse_mm():
        coo = torch.sparse_coo_tensor(
            torch.stack([torch.arange(batch).repeat_interleave(k), indices.reshape(-1)]),
            values.reshape(-1),
            (batch, n_latents),
        )
        return torch.sparse.mm(coo.t().coalesce(), rows)

    def one_product():
        return torch.addmm(b_enc, x - b_dec, W_enc).topk(k, dim=-1, sorted=False)

    params = [torch.nn.Parameter(t.clone()) for t in (W_enc, W_enc.t().contiguous(), b_enc, b_dec)]
    for p in params:
        p.grad = torch.randn_like(p)
    fused, loop = (torch.optim.Adam(params, lr=1e-4, fused=f) for f in (True, False))

    results = {
        "sum_by_latent": _median_ms(
            {"sarm": lambda: kernels._sum_by_latent(indices, values, rows, n_latents), "alternative": sparse_mm},
            repeats,
        ),
        "encoder chunks": _median_ms(
            {"sarm": lambda: kernels.topk_encode(x, b_dec, W_enc, b_enc, k), "alternative": one_product}, repeats
        ),
        "fused Adam": _median_ms({"sarm": fused.step, "alternative": loop.step}, repeats),
    }
    print(f"batch {batch} × d {d_in}, {n_latents} latents, k = {k}, {torch.get_num_threads()} threads")
    print(f"{'kernel':<16}{'sarm ms':>10}{'alternative ms':>16}{'ratio':>8}")
    for name, ms in results.items():
        print(f"{name:<16}{ms['sarm']:>10.1f}{ms['alternative']:>16.1f}{ms['alternative'] / ms['sarm']:>8.2f}")
    return results


if __name__ == "__main__":
    CLI(bench_kernels, as_positional=False)
