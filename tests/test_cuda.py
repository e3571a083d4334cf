"""sarm's CUDA paths against their CPU or dense references: sparse kernels, the SAE training step, bf16 caching,
SARM's forward, and a Lightning fit of each model.

Each test runs on the CPU too (small sizes), so its logic is proven on machines without a GPU; the ``cuda``
variants carry the ``cuda`` marker and skip where ``torch.cuda.is_available()`` is false
(``pytest -m cuda tests/test_cuda.py`` on a GPU node; ``scripts/gpu_check.sh`` runs the whole file).
"""

from __future__ import annotations

import copy

import pytest
import torch
from commands import cache_pairs, fit_sae, fit_sarm
from conftest import write_toy_pairs

from sarm.sae import TopKSAE
from sarm.sae.base import SparseAutoencoder
from sarm.sae.kernels import sparse_decode, topk_encode

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]


def make_sae(device: str, dtype=torch.float32, k=8, n=256, d=32, seed=0) -> TopKSAE:
    """A TopK SAE with non-zero biases, built on the CPU from ``seed`` and then moved (same init everywhere)."""
    torch.manual_seed(seed)
    sae = TopKSAE(d, n, k, input_norm="none")
    with torch.no_grad():
        sae.b_enc.normal_(std=0.5)
        sae.b_dec.normal_(std=0.5)
    return sae.to(device=device, dtype=dtype)


def weighted_loss(x: torch.Tensor, x_hat: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Every output coordinate weighed differently, so no gradient cancels by symmetry."""
    weights = torch.linspace(0.5, 2.0, x.shape[-1], dtype=x.dtype, device=x.device)
    return ((x.detach() - x_hat).pow(2) * weights).sum() + latents.pow(2).sum()


def grads(sae, x, reconstruct) -> tuple:
    sae.zero_grad()
    x = x.clone().requires_grad_()
    out = reconstruct(sae, x)
    weighted_loss(x, out.x_hat, out.latents).backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()} | {"x": x.grad.clone()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_path_matches_dense_reference_on_the_device(device, dtype):
    sae = make_sae(device, dtype)
    x = torch.randn(300, 32, dtype=dtype).to(device)
    fast, fast_grads = grads(sae, x, TopKSAE.reconstruct)
    slow, slow_grads = grads(sae, x, SparseAutoencoder.reconstruct)
    assert fast.top is not None and slow.top is None  # the sparse kernels ran
    assert fast.x_hat.device.type == device
    tolerance = {} if dtype == torch.float64 else {"atol": 1e-3, "rtol": 1e-3}
    torch.testing.assert_close(fast.x_hat, slow.x_hat, **tolerance)
    torch.testing.assert_close(fast.latents, slow.latents, **tolerance)
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], msg=f"gradient of {name}", **tolerance)
        assert slow_grads[name].abs().sum() > 0, name


def reference_for(selection: torch.Tensor, x, b_dec, W_enc, b_enc, W_dec):
    """The kernels' outputs computed densely, for a given selection of latents (the same indices)."""
    pre = (x - b_dec) @ W_enc + b_enc
    values = pre.gather(1, selection).relu()
    latents = torch.zeros_like(pre).scatter(1, selection, values)
    return values, latents @ W_dec


DTYPES = [
    ("cpu", torch.float32),
    pytest.param("cuda", torch.float32, marks=[pytest.mark.cuda, CUDA]),
    pytest.param("cuda", torch.bfloat16, marks=[pytest.mark.cuda, CUDA]),
]


@pytest.mark.parametrize(("device", "dtype"), DTYPES)
def test_kernels_values_and_gradients_for_their_own_selection(device, dtype):
    """topk_encode + sparse_decode against dense autograd over the same kept indices (ties cannot flip a
    selection between two computations here), and the selection is a TopK of the dense pre-activations."""
    torch.manual_seed(1)
    d, n, k = 64, 512, 16
    leaves = {
        "x": torch.randn(200, d),
        "b_dec": 0.3 * torch.randn(d),
        "W_enc": torch.randn(d, n) / d**0.5,
        "b_enc": 0.3 * torch.randn(n),
        "W_dec": torch.randn(n, d) / d**0.5,
    }
    leaves = {name: t.to(device=device, dtype=dtype).requires_grad_() for name, t in leaves.items()}
    upstream = torch.randn(200, d).to(device=device, dtype=dtype)

    values, indices = topk_encode(leaves["x"], leaves["b_dec"], leaves["W_enc"], leaves["b_enc"], k)
    x_hat = sparse_decode(values, indices, leaves["W_dec"])
    fast = torch.autograd.grad((x_hat * upstream).sum() + values.pow(2).sum(), list(leaves.values()))

    ref_values, ref_x_hat = reference_for(indices, *leaves.values())
    slow = torch.autograd.grad((ref_x_hat * upstream).sum() + ref_values.pow(2).sum(), list(leaves.values()))

    tolerance = {"atol": 3e-2, "rtol": 3e-2} if dtype == torch.bfloat16 else {"atol": 1e-3, "rtol": 1e-3}
    torch.testing.assert_close(values, ref_values, **tolerance)
    torch.testing.assert_close(x_hat, ref_x_hat, **tolerance)
    for name, a, b in zip(leaves, fast, slow):
        # bf16 sums of many terms in different orders: compare against the scale of the gradient.
        scale = b.float().abs().max().item()
        if dtype == torch.bfloat16:
            assert (a.float() - b.float()).abs().max().item() <= 2e-2 * scale + 1e-2, f"gradient of {name}"
        else:
            torch.testing.assert_close(a, b, msg=f"gradient of {name}", **tolerance)
        assert scale > 0, name

    with torch.no_grad():  # a TopK: the k-th kept pre-activation is at least every one left out
        pre = ((leaves["x"] - leaves["b_dec"]) @ leaves["W_enc"] + leaves["b_enc"]).float()
        kept = pre.gather(1, indices)
        left = pre.scatter(1, indices, float("-inf"))
        slack = 5e-2 if dtype == torch.bfloat16 else 1e-4
        assert (kept.min(1).values >= left.max(1).values - slack).all()
        assert indices.sort(1).values.diff(dim=1).ne(0).all()  # k distinct latents per row


def sae_training_steps(device: str, steps: int = 3) -> dict:
    """An SAEModule's parameters after ``steps`` steps (sparse kernels, AuxK, dead tracking, decoder projection,
    fused Adam, renormalized decoder) from the seed-0 init on ``device``, in float64."""
    from sarm.sae.module import SAEModule

    torch.manual_seed(0)
    x = torch.randn(512, 32, dtype=torch.float64)
    torch.manual_seed(0)
    module = SAEModule("topk", 1024, 4, d_in=32, input_norm="none", lr=1e-3, dead_after_tokens=100)
    module = module.to(device=device, dtype=torch.float64)
    optimizer = module.build_optimizer()
    for _ in range(steps):
        loss, logs, out = module.training_loss(x.to(device))
        loss.backward()
        module.sae.remove_parallel_decoder_grad()
        optimizer.step()
        optimizer.zero_grad()
        module.sae.normalize_decoder()
    if steps:
        assert out.top is not None and out.x_hat.device.type == device  # the sparse kernels ran there
        assert logs["train/dead_fraction"].item() > 0  # AuxK had dead latents to revive
    return {name: p.detach().cpu() for name, p in module.sae.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
def test_sae_training_steps_on_the_device_match_the_cpu_from_the_same_init(device):
    """float64, so that no TopK selection can differ between the two devices."""
    on_device, on_cpu, initial = sae_training_steps(device), sae_training_steps("cpu"), sae_training_steps("cpu", 0)
    for name, p in on_cpu.items():
        torch.testing.assert_close(on_device[name], p, msg=name)
        assert not torch.equal(p, initial[name]), f"{name} did not train"


@pytest.mark.parametrize("device", DEVICES)
def test_sarm_forward_on_the_device_equals_the_cpu(device):
    from sarm.reward.network import SARMNetwork

    torch.manual_seed(2)
    sae = make_sae("cpu", torch.float64, k=8, n=256, d=32)
    hidden = torch.randn(6, 11, 32, dtype=torch.float64)
    mask = torch.ones(6, 11, dtype=torch.bool)
    mask[:3, :4] = False  # left-padded rows
    mask[3:, 8:] = False  # right-padded rows
    rewards = {}
    for where, pooling in [(w, p) for w in ("cpu", device) for p in ("last", "mean")]:
        network = SARMNetwork(copy.deepcopy(sae), pooling).to(torch.float64)
        torch.manual_seed(3)
        network.head.weight.data.normal_()
        network = network.to(where)
        with torch.no_grad():
            rewards[where, pooling] = network(hidden.to(where), mask.to(where)).cpu()
    for pooling in ("last", "mean"):
        torch.testing.assert_close(rewards[device, pooling], rewards["cpu", pooling])
        assert rewards["cpu", pooling].abs().sum() > 0


def cached(root):
    """Every shard's token and last-token activations of a cache, concatenated in shard order."""
    from safetensors.torch import load_file

    shards = [load_file(p) for p in sorted(root.glob("shard-*.safetensors"))]
    return {key: torch.cat([s[key] for s in shards]) for key in ("tokens", "last", "token_seq")}


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_cache_on_the_device_matches_a_float32_cpu_cache(device, tmp_path, tiny_model_dir):
    from sarm.cli import main

    data = write_toy_pairs(tmp_path / "pairs.jsonl", n=16)
    main([*cache_pairs(data, tiny_model_dir, tmp_path / "f32", dtype="float32", batch_size=8), "--accelerator", "cpu"])
    main(
        [*cache_pairs(data, tiny_model_dir, tmp_path / "bf16", dtype="bfloat16", batch_size=8), "--accelerator", device]
    )
    reference, half = cached(tmp_path / "f32"), cached(tmp_path / "bf16")
    assert half["tokens"].dtype == torch.bfloat16 and reference["tokens"].dtype == torch.float32
    assert torch.equal(half["token_seq"], reference["token_seq"])
    for key in ("tokens", "last"):
        torch.testing.assert_close(half[key].float(), reference[key], atol=2e-2, rtol=1.6e-2, msg=key)


@pytest.mark.parametrize("device", DEVICES)
def test_sae_and_sarm_fit_and_export_through_lightning_on_the_device(device, tmp_path, tiny_cache):
    """`sarm fit` of an SAE and of a SARM head on the device (one epoch each), then `sarm test` of the SARM."""
    from sarm.cli import main

    accelerator = {"trainer.accelerator": device}
    main(fit_sae(tiny_cache["cache"], tmp_path, epochs=1, **accelerator))
    assert (tmp_path / "sae" / "sae_weights.safetensors").is_file()
    main(fit_sarm(tiny_cache["cache"], tmp_path / "sae", tmp_path, epochs=1, **accelerator))
    assert (tmp_path / "sarm" / "head.safetensors").is_file()
    test = fit_sarm(
        tiny_cache["cache"], tmp_path / "sae", tmp_path, epochs=1, export=tmp_path / "unused", **accelerator
    )
    test[0] = "test"
    main([*test, "--model.init_from", str(tmp_path / "sarm")])


VARIANTS = {
    "batchtopk": {"model.architecture": "batchtopk"},
    "relu": {"model.architecture": "relu", "model.sparsity_coefficient": 0.01},
    "whitened": {"model.whitening": True},
    "scaled": {"model.scale_activations": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("device", DEVICES)
def test_sae_variants_fit_and_export_on_the_device(device, variant, tmp_path, tiny_cache):
    """The SAE families and input transforms whose set-up or forward has device-specific steps (first-batch
    statistics, thresholds, whitening folded on export), one epoch each on the device."""
    from sarm.cli import main
    from sarm.sae import load_sae

    main(fit_sae(tiny_cache["cache"], tmp_path, epochs=1, **{"trainer.accelerator": device}, **VARIANTS[variant]))
    sae = load_sae(tmp_path / "sae")
    assert all(torch.isfinite(p).all() for p in sae.parameters())
