"""Sparse TopK kernels: an encoder and a decoder whose backward touches only the selected latents.

Through dense autograd, a TopK SAE step costs three [batch × d × n] matmuls (the encoder forward,
dL/dW_enc = xcᵀ·G and dL/dW_dec = Fᵀ·dL/dx̂) plus [batch, n] zeros, scatters and masks. Only k of
the n entries of each row of G (the pre-activation gradient) and F (the latents) are non-zero, so:

    forward   pre = xc · W_enc + b_enc in row chunks, each reduced to its TopK at once: every latent
              competes for a slot, so this one dense matmul is the floor of any exact TopK step; the
              full [batch, n] pre-activation matrix is never held.
    encoder   dL/dW_enc = (Sᵀ · xc)ᵀ with S the sparse [batch, n] matrix of G's k entries per row
              (summed per latent with one embedding_bag; Sᵀ · xc is the gradient of the SAE's latent-major
              ``encoder`` parameter as it is laid out, so it is taken without a copy),
              dL/db_enc = Σ_tokens S,  dL/db_dec = −W_enc · dL/db_enc  (xc = x − b_dec)
    decoder   x̂ = Σ_j v_j · W_dec[i_j] (embedding_bag),  dL/dW_dec = Vᵀ · dL/dx̂ with V sparse,
              dL/dv_j = W_dec[i_j] · dL/dx̂ (embedding_bag's own per-sample-weight gradient)

so the backward is batch·k·d work instead of batch·n·d. ``tests/test_sae.py`` checks values and
gradients against the dense reference (``SparseAutoencoder.reconstruct``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per encoder chunk: [chunk, n] float32 pre-activations of about 32 MiB stay in cache while
# TopK reads them (scripts/bench_kernels.py times it against one [batch, n] product), but never fewer
# rows than MIN_CHUNK_ROWS: a thinner [rows, d] × [d, n] product loses more to the matmul's own blocking
# than the cache saves once n is wide (scripts/bench_sae.py at n = 65,536).
CHUNK_ELEMENTS = 1 << 23
MIN_CHUNK_ROWS = 512


def _sum_by_latent(indices: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, n_latents: int) -> torch.Tensor:
    """``[n_latents, d]``: row i is Σ weights[b, j] · rows[b] over the (b, j) where indices[b, j] = i.

    That is Sᵀ · rows for the sparse [batch, n_latents] matrix S holding ``weights`` at ``indices``,
    computed as one embedding_bag over the (token, slot) pairs grouped by latent: a bag per latent,
    empty for latents no token selected (scripts/bench_kernels.py times it against torch.sparse.mm).
    """
    flat = indices.reshape(-1)
    order = flat.argsort()
    counts = torch.bincount(flat, minlength=n_latents)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts[:-1].cumsum(0)
    tokens = order // indices.shape[-1]
    return F.embedding_bag(tokens, rows, offsets, mode="sum", per_sample_weights=weights.reshape(-1)[order])


class TopKEncode(torch.autograd.Function):
    """(values, indices) of each row's k largest ReLU'd pre-activations of (x − b_dec) · W_enc + b_enc."""

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, k: int, keep: torch.Tensor | None):
        xc = x - b_dec
        n = W_enc.shape[1]
        chunk = xc.shape[0] if xc.is_cuda else max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // n)
        values, indices = [], []
        buffer = xc.new_empty(min(chunk, xc.shape[0]), n)  # one buffer: fresh pages cost as much as a TopK
        for rows in xc.split(chunk):
            pre = torch.addmm(b_enc, rows, W_enc, out=buffer[: rows.shape[0]])
            if keep is not None:  # masked latents neither fire nor take a slot
                pre.masked_fill_(~keep, float("-inf"))
            v, i = pre.topk(k, dim=-1, sorted=False)
            values.append(v)
            indices.append(i)
        values, indices = F.relu(torch.cat(values)), torch.cat(indices)
        ctx.save_for_backward(xc, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        xc, W_enc, values, indices = ctx.saved_tensors
        g = grad_values.masked_fill(values <= 0, 0.0)  # ReLU: no gradient where the kept value is 0
        n = W_enc.shape[1]
        grad_x = grad_b_dec = grad_W_enc = grad_b_enc = None
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[1]:
            grad_b_enc = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(
                0, indices.reshape(-1), g.reshape(-1)
            )
        if ctx.needs_input_grad[2]:
            grad_W_enc = _sum_by_latent(indices, g, xc, n).t()
        if ctx.needs_input_grad[1]:  # Σ over tokens of −G·W_encᵀ, without the [batch, d] product
            grad_b_dec = -(W_enc @ grad_b_enc)
        if ctx.needs_input_grad[0]:
            rows = W_enc.t().contiguous()  # the SAE's latent-major encoder: no copy
            grad_x = F.embedding_bag(indices, rows, per_sample_weights=g, mode="sum")
        return grad_x, grad_b_dec, grad_W_enc, grad_b_enc, None, None


class SparseDecode(torch.autograd.Function):
    """Σ_j values[:, j] · W_dec[indices[:, j]] (no b_dec), with a sparse gradient for W_dec."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        # embedding_bag's own per-sample-weight gradient (a k·d dot product per token) is fast, its
        # weight gradient is not: record the product for the former, with the weight detached.
        # CUDA has no bfloat16/float16 kernel for that gradient (found by scripts/gpu_check.sh on an H200):
        # there the product is kept in float32.
        upcast = values.is_cuda and values.dtype in (torch.bfloat16, torch.float16)
        with torch.enable_grad():
            v = (values.detach().float() if upcast else values.detach()).requires_grad_()
            weight = W_dec.detach().float() if upcast else W_dec.detach()
            out = F.embedding_bag(indices, weight, per_sample_weights=v, mode="sum")
        ctx.product = (v, out)
        ctx.save_for_backward(values, indices)
        ctx.n_latents = W_dec.shape[0]
        return out.detach().to(values.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        values, indices = ctx.saved_tensors
        v, out = ctx.product
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            (grad_values,) = torch.autograd.grad(out, v, grad_out.to(out.dtype), retain_graph=True)
            grad_values = grad_values.to(values.dtype)
        if ctx.needs_input_grad[2]:
            grad_W_dec = _sum_by_latent(indices, values, grad_out, ctx.n_latents)
        return grad_values, None, grad_W_dec


def topk_encode(
    x: torch.Tensor,
    b_dec: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    k: int,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest ReLU'd pre-activations and their latent indices, both ``[batch, k]``."""
    return TopKEncode.apply(x, b_dec, W_enc, b_enc, k, keep)


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``[batch, d]`` reconstruction (without b_dec) from k (value, latent) pairs per row."""
    return SparseDecode.apply(values, indices, W_dec)
