"""The sparse TopK kernels compute exactly what the dense reference computes, values and gradients."""

import pytest
import torch

from sarm.sae import TopKSAE
from sarm.sae.base import SparseAutoencoder, TopLatents
from sarm.sae.kernels import sparse_decode, topk_encode


def make_sae(dtype=torch.float64, k=4, n=64, d=16, seed=0):
    torch.manual_seed(seed)
    sae = TopKSAE(d, n, k, input_norm="none").to(dtype)
    with torch.no_grad():
        sae.b_enc.normal_(std=0.5)
        sae.b_dec.normal_(std=0.5)
    return sae


def losses_and_grads(sae, x, reconstruct):
    """A loss that weighs every output coordinate differently, so no gradient cancels by symmetry."""
    sae.zero_grad()
    x = x.clone().requires_grad_()
    out = reconstruct(sae, x)
    weights = torch.linspace(0.5, 2.0, x.shape[-1], dtype=x.dtype)
    loss = ((x.detach() - out.x_hat).pow(2) * weights).sum() + out.latents.pow(2).sum()
    loss.backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()} | {"x": x.grad.clone()}


@pytest.mark.parametrize("shape", [(37, 16), (3, 5, 16)])
def test_sparse_path_matches_dense_reference_in_values_and_every_gradient(shape):
    sae = make_sae()
    x = torch.randn(*shape, dtype=torch.float64)
    fast, fast_grads = losses_and_grads(sae, x, TopKSAE.reconstruct)
    slow, slow_grads = losses_and_grads(sae, x, SparseAutoencoder.reconstruct)
    assert fast.top is not None and slow.top is None  # the two paths really differ
    torch.testing.assert_close(fast.x_hat, slow.x_hat)
    torch.testing.assert_close(fast.latents, slow.latents)
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], msg=f"gradient of {name}")
        assert slow_grads[name].abs().sum() > 0, name  # not vacuous


def test_parity_holds_when_kept_slots_are_zero_and_latents_are_masked():
    sae = make_sae()
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)  # most pre-activations negative: TopK keeps zeros, ReLU blocks their gradient
    sae.latent_mask[::3] = False
    x = torch.randn(40, 16, dtype=torch.float64)
    fast, fast_grads = losses_and_grads(sae, x, TopKSAE.reconstruct)
    slow, slow_grads = losses_and_grads(sae, x, SparseAutoencoder.reconstruct)
    assert (fast.top.values == 0).any() and (fast.top.values > 0).any()
    assert (fast.latents[:, ::3] == 0).all()
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], msg=f"gradient of {name}")
    assert (fast_grads["encoder"][::3] == 0).all() and (fast_grads["W_dec"][::3] == 0).all()


def test_float32_training_step_matches_dense_reference():
    dense, sparse = make_sae(torch.float32, k=8, n=256, d=32), make_sae(torch.float32, k=8, n=256, d=32)
    x = torch.randn(512, 32)
    for sae, reconstruct in ((sparse, TopKSAE.reconstruct), (dense, SparseAutoencoder.reconstruct)):
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
        for _ in range(3):
            optimizer.zero_grad()
            out = reconstruct(sae, x)
            (x - out.x_hat).pow(2).sum(-1).mean().backward()
            optimizer.step()
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_kernels_take_gradients_only_where_asked():
    sae = make_sae()
    x = torch.randn(10, 16, dtype=torch.float64)
    values, indices = topk_encode(x, sae.b_dec.detach(), sae.W_enc, sae.b_enc.detach(), 4)
    sparse_decode(values, indices, sae.W_dec.detach()).sum().backward()
    assert sae.encoder.grad is not None and sae.W_dec.grad is None and sae.b_enc.grad is None
    assert indices.dtype == torch.long and not indices.requires_grad


def test_no_grad_forward_gives_top_latents_that_densify_to_the_reference():
    sae = make_sae()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        out = sae(x)
    assert isinstance(out.top, TopLatents) and out.top.values.shape == (3, 7, 4) and out.pre is None
    torch.testing.assert_close(out.latents, sae.encode(x))
    torch.testing.assert_close(out.firing_counts(), (sae.encode(x) > 0).reshape(-1, 64).sum(0))
    torch.testing.assert_close(out.l0(), (sae.encode(x) > 0).sum(-1).double().mean().float())


def test_dense_fallback_when_sparse_kernels_are_off():
    sae = make_sae()
    sae.sparse_kernels = False
    out = sae(torch.randn(5, 16, dtype=torch.float64))
    assert out.top is None and out.pre is not None


def test_encoder_chunks_agree_with_one_pass(monkeypatch):
    import sarm.sae.kernels as kernels

    sae = make_sae()
    x = torch.randn(50, 16, dtype=torch.float64)
    whole = topk_encode(x, sae.b_dec, sae.W_enc, sae.b_enc, 4)
    products = []
    addmm = torch.addmm
    monkeypatch.setattr(
        torch, "addmm", lambda *args, **kwargs: products.append(args[1].shape[0]) or addmm(*args, **kwargs)
    )
    monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 64 * 3)  # 3 rows a chunk by the element budget ...
    monkeypatch.setattr(kernels, "MIN_CHUNK_ROWS", 7)  # ... but never fewer than 7: 8 chunks, the last short
    chunked = topk_encode(x, sae.b_dec, sae.W_enc, sae.b_enc, 4)
    assert products == [7] * 7 + [1]
    torch.testing.assert_close(chunked[0], whole[0])  # GEMM blocking may differ in the last bits
    assert torch.equal(chunked[1], whole[1])
