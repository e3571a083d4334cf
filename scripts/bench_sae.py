"""One TopK SAE training step (forward, backward, optimizer), timed in one run for:

    floor     one dense encoder matmul, batch × d × n: every latent competes for a TopK slot, so an
              exact TopK step cannot do less
    sarm      SAEModule's own training step: sparse kernels (sarm/sae/kernels.py), AuxK, dead-latent
              tracking, decoder-gradient projection, fused Adam, decoder renormalization
    naive     the same SAE through dense autograd (the base class's reconstruct) and plain Adam
    SAELens   TopKTrainingSAE.training_forward_pass + backward + grad clipping + Adam, as its trainer
              steps (dense and with its use_sparse_activations option)
    sparsify  SparseCoder forward (fused encoder) + backward + Adam, as its trainer steps

SAELens and sparsify are peers, not dependencies: they are installed in the benchmark's own
environment (``make bench-sae`` builds it) and a missing one is reported and skipped.

    python scripts/bench_sae.py [--d_in 576] [--n_latents 8192] [--k 32] [--batch 4096] [--steps 5] [--device cuda]

Each row: median seconds per step over ``--steps`` timed steps (after 2 warm-up steps) and the ratio
to the floor, whose median is taken over timings interleaved with the others. On a GPU each timed step ends
with a synchronization, so a row is the step's device time, not its launch time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from jsonargparse import CLI

from sarm.sae.base import SparseAutoencoder
from sarm.sae.losses import normalized_mse
from sarm.sae.module import SAEModule


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], steps: int, warmup: int = 2, device: torch.device | None = None) -> float:
    device = device or torch.device("cpu")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sarm_step(x: torch.Tensor, n_latents: int, k: int) -> Callable[[], None]:
    module = SAEModule("topk", n_latents, k, d_in=x.shape[1], input_norm="none", lr=1e-4).to(x.device)
    optimizer = module.build_optimizer()

    def step():
        loss, _, _ = module.training_loss(x)
        loss.backward()
        module.sae.remove_parallel_decoder_grad()
        optimizer.step()
        optimizer.zero_grad()
        module.sae.normalize_decoder()

    return step


def naive_step(x: torch.Tensor, n_latents: int, k: int) -> Callable[[], None]:
    module = SAEModule("topk", n_latents, k, d_in=x.shape[1], input_norm="none", lr=1e-4).to(x.device)
    sae = module.sae
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)

    def step():
        out = SparseAutoencoder.reconstruct(sae, x)  # dense latents, dense decode, dense backward
        normalized_mse(out.x, out.x_hat).backward()
        sae.remove_parallel_decoder_grad()
        optimizer.step()
        optimizer.zero_grad()
        sae.normalize_decoder()

    return step


def saelens_step(x: torch.Tensor, n_latents: int, k: int, sparse: bool) -> Callable[[], None]:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    cfg = TopKTrainingSAEConfig(
        d_in=x.shape[1], d_sae=n_latents, k=k, dtype="float32", device=str(x.device), use_sparse_activations=sparse
    )
    sae = TopKTrainingSAE(cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(n_latents, dtype=torch.bool, device=x.device)

    def step():
        out = sae.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False)
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def sparsify_step(x: torch.Tensor, n_latents: int, k: int) -> Callable[[], None]:
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(x.shape[1], SparseCoderConfig(k=k, num_latents=n_latents), device=x.device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(n_latents, dtype=torch.bool, device=x.device)

    def step():
        out = sae(x, dead_mask=dead)
        (out.fvu + out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
        sae.set_decoder_norm_to_unit_norm()

    return step


def main(
    d_in: int = 576, n_latents: int = 8192, k: int = 32, batch: int = 4096, steps: int = 5, device: str = "cpu"
) -> None:
    """Time one TopK SAE training step of sarm, a naive dense SAE and the installed peers against the floor.

    Args:
        d_in: input width (SmolLM2-135M's hidden size by default).
        n_latents: SAE latents.
        k: active latents per token.
        batch: tokens per step.
        steps: timed steps per contender (after 2 warm-up steps).
        device: ``cpu`` or ``cuda`` (every contender's parameters and batch live there).
    """
    torch.manual_seed(0)
    where = torch.device(device)
    x = torch.randn(batch, d_in, device=where)
    W_enc = torch.randn(d_in, n_latents, device=where) / d_in**0.5

    contenders = {
        "sarm": lambda: sarm_step(x, n_latents, k),
        "naive dense": lambda: naive_step(x, n_latents, k),
        "SAELens": lambda: saelens_step(x, n_latents, k, sparse=False),
        "SAELens (sparse acts)": lambda: saelens_step(x, n_latents, k, sparse=True),
        "sparsify": lambda: sparsify_step(x, n_latents, k),
    }
    floors, seconds = [], {}
    for name, build in contenders.items():
        floors.append(timed(lambda: x @ W_enc, steps, device=where))
        try:
            seconds[name] = timed(build(), steps, device=where)
        except ImportError as error:
            print(f"{name}: skipped ({error.name} is not installed; `make bench-sae` installs the peers)")
        except Exception as error:  # a peer's own bug: report it, time the others
            print(f"{name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    floors.append(timed(lambda: x @ W_enc, steps, device=where))
    floor = statistics.median(floors)

    on = torch.cuda.get_device_name(where) if where.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"TopK training step: d_in={d_in} n_latents={n_latents} k={k} batch={batch} fp32, {on}, median of {steps} steps"
    )
    print(f"{'':<24}{'s/step':>9}{'x floor':>9}{'tokens/s':>11}")
    print(f"{'floor (x @ W_enc)':<24}{floor:>9.3f}{1:>9.2f}{'':>11}")
    for name, s in seconds.items():
        print(f"{name:<24}{s:>9.3f}{s / floor:>9.2f}{batch / s:>11,.0f}")
    if "sarm" in seconds:
        peers = {name: s / seconds["sarm"] for name, s in seconds.items() if name != "sarm"}
        print("sarm speed-up: " + ", ".join(f"{v:.2f}x vs {name}" for name, v in peers.items()))


if __name__ == "__main__":
    CLI(main, as_positional=False)
