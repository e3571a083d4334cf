"""Round trips against the real SAELens and sparsify (``make test-peers``; skipped where they are not installed).

sarm → SAELens: every sarm architecture and variant, saved by ``save_sae``, loaded by SAELens's
``SAE.load_from_disk`` as it is; SAELens's ``encode(x)`` against sarm's latents, and SAELens's ``decode`` of
sarm's latents against sarm's reconstruction in the hidden states' own space. Then SAELens saves it again and
sarm loads that: nothing sarm needs is lost on the way. SAELens / sparsify → sarm: files those libraries
write themselves, loaded by ``load_sae``, against their own ``encode`` / ``decode``. Every difference ≤ 1e-5 times
the values' own scale (max(1, max |latent|) for encode, max(1, max |x̂|) for decode): float32's resolution.
"""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens", reason="the peer round trips need SAELens: `make test-peers`")
sparsify = pytest.importorskip("sparsify", reason="the peer round trips need sparsify: `make test-peers`")

from sarm.sae import (  # noqa: E402
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaBatchTopKSAE,
    ReLUSAE,
    TopKSAE,
    load_sae,
    save_sae,
)
from sarm.sae.whitening import PCAWhitening, fold_whitening, whitened_forward  # noqa: E402

pytestmark = pytest.mark.peers

D_IN, D_SAE, K = 64, 256, 8
PROVENANCE = {"model_name": "embedded:SmolLM2-135M-Instruct", "hook_layer": 15, "context_size": 256}


def residual_like(n: int = 512, seed: int = 1) -> torch.Tensor:
    """Hidden states at a residual stream's scale: per-token std 4–8 and an offset (SmolLM2-135M's layer 15
    has σ ≥ 4.4 on every token)."""
    generator = torch.Generator().manual_seed(seed)
    scale = 4 + 4 * torch.rand(n, 1, generator=generator)
    return scale * torch.randn(n, D_IN, generator=generator) + torch.randn(n, 1, generator=generator)


def trained_like(sae, seed: int = 0):
    """Biases and thresholds so that ~5–10 % of the latents fire, as in a trained SAE (and so reconstructions
    have a hidden state's magnitude, not that of 256 random latents at once)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        shift = -1.5 if isinstance(sae, ReLUSAE) else 0.0  # ReLU's sparsity is its bias
        sae.b_enc.copy_(shift + 0.1 * torch.randn(sae.n_latents, generator=generator))
        sae.b_dec.copy_(0.5 * torch.randn(sae.d_in, generator=generator))
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(1.5)
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(1 + torch.rand(sae.n_latents, generator=generator))
    return sae.eval()


def to_raw(x_hat: torch.Tensor, x: torch.Tensor, input_norm: str) -> torch.Tensor:
    """sarm reconstructs in its preprocessed space; the hidden states' own space is x̂'·σ + μ."""
    if input_norm == "standardize":
        return x_hat * x.std(-1, keepdim=True, unbiased=False) + x.mean(-1, keepdim=True)
    return x_hat


def variants():
    """(name, the SAE sarm exports, encode(x) → latents, decode(latents, x) → raw reconstruction), computed the
    way sarm computes them before any fold: whitened and scaled SAEs through their whitening."""
    x = residual_like(2048, seed=7)
    cases = []
    for norm in ("standardize", "none"):
        for name, make in (
            ("TopK", lambda n: TopKSAE(D_IN, D_SAE, K, n)),
            ("BatchTopK", lambda n: BatchTopKSAE(D_IN, D_SAE, K, n)),
            ("Matryoshka BatchTopK", lambda n: MatryoshkaBatchTopKSAE(D_IN, D_SAE, K, n)),
            ("ReLU", lambda n: ReLUSAE(D_IN, D_SAE, n)),
            ("JumpReLU", lambda n: JumpReLUSAE(D_IN, D_SAE, n)),
        ):
            torch.manual_seed(0)
            sae = trained_like(make(norm))
            cases.append(
                (
                    f"{name}, {'standardized' if norm == 'standardize' else 'raw'}",
                    sae,
                    sae.encode,
                    lambda f, x, sae=sae: to_raw(sae.decode(f), x, sae.input_norm),
                )
            )
    for name, make in (("TopK", lambda: TopKSAE(D_IN, D_SAE, K)), ("BatchTopK", lambda: BatchTopKSAE(D_IN, D_SAE, K))):
        for variant in ("whitened", "scaled"):
            torch.manual_seed(0)
            sae = trained_like(make())
            if variant == "whitened":
                whitening = PCAWhitening.fit(sae.preprocess(x))
            else:  # SAEModule(scale_activations=True): one scalar, √d / mean ‖x'‖
                whitening = PCAWhitening(D_IN)
                scale = D_IN**0.5 / sae.preprocess(x).norm(dim=-1).mean()
                whitening.whiten_matrix.copy_(torch.eye(D_IN) * scale)
                whitening.unwhiten_matrix.copy_(torch.eye(D_IN) / scale)
            cases.append(
                (
                    f"{name}, standardized + {variant}",
                    fold_whitening(sae, whitening),
                    lambda x, sae=sae, w=whitening: whitened_forward(sae, w, x).latents,
                    lambda f, x, sae=sae, w=whitening: to_raw(w.unwhiten(sae.decode(f)).float(), x, "standardize"),
                )
            )
    return cases


VARIANTS = variants()


@pytest.mark.parametrize("name, sae, encode, decode", VARIANTS, ids=[case[0] for case in VARIANTS])
def test_sarm_to_saelens_and_back(tmp_path, record, name, sae, encode, decode):
    from sae_lens import SAE

    save_sae(sae, tmp_path / "sarm", extra=PROVENANCE)
    x = residual_like()
    latents = encode(x)
    assert (latents > 0).any(-1).all()
    theirs = SAE.load_from_disk(tmp_path / "sarm")  # as it is: no dtype, no k, no options
    with torch.no_grad():
        f = theirs.encode(x)
        x_hat = theirs.decode(latents)  # after encode: layer_norm's μ and s are x's
    assert torch.equal(f > 0, latents > 0)  # every token keeps its active set
    assert record(name, "sarm → SAELens", latents, f, decode(latents, x), x_hat)

    theirs.save_model(tmp_path / "resaved")  # a SAELens load + save keeps what sarm reads back
    again = load_sae(tmp_path / "resaved")
    assert type(again) is type(sae) and again.input_norm == sae.input_norm
    assert again.provenance == PROVENANCE
    raw = to_raw(again.decode(latents), x, again.input_norm)
    assert record(name, "sarm → SAELens → sarm", latents, again.encode(x), decode(latents, x), raw)


def randomized(sae, seed: int = 0):
    """A SAELens SAE with non-zero biases and thresholds (SAELens initializes them to 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(0.5 * torch.randn(D_IN, generator=generator))
        if hasattr(sae, "b_enc"):
            sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=generator))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.5 * torch.rand(D_SAE, generator=generator))
        if hasattr(sae, "topk_threshold"):  # its encoder starts at norm ~0.01 (decoder_init_norm 0.1)
            sae.topk_threshold.fill_(0.05)
    return sae


def saelens_files(kind: str, directory):
    """(SAE name, the SAELens inference SAE whose encode/decode are the reference); files written under
    ``directory`` by SAELens itself."""
    from sae_lens import SAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAEConfig
    from sae_lens import JumpReLUSAE as SLJumpReLU
    from sae_lens import TopKSAE as SLTopK
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    torch.manual_seed(0)
    if kind == "standard":
        sae = randomized(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)))
    elif kind == "standard, apply_b_dec_to_input false":
        sae = randomized(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)))
    elif kind == "topk":
        sae = randomized(SLTopK(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)))
    elif kind == "jumprelu (per-latent θ)":
        sae = randomized(SLJumpReLU(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)))
    elif kind == "matryoshka batchtopk, final file":  # jumprelu, k and matryoshka_widths in metadata
        from sae_lens.saes.matryoshka_batchtopk_sae import (
            MatryoshkaBatchTopKTrainingSAE,
            MatryoshkaBatchTopKTrainingSAEConfig,
        )

        config = MatryoshkaBatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=MATRYOSHKA_WIDTHS)
        randomized(MatryoshkaBatchTopKTrainingSAE(config)).save_inference_model(directory)
        return SAE.load_from_disk(directory)
    else:  # a BatchTopK run: its final file (jumprelu, k in metadata) or its training checkpoint (batchtopk)
        training = randomized(BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)))
        training.save_inference_model(directory / "final")
        if kind == "batchtopk, training checkpoint":
            training.save_model(directory)
        else:
            training.save_inference_model(directory)
        return SAE.load_from_disk(directory / "final")
    sae.save_model(directory)
    return SAE.load_from_disk(directory)


SAELENS_KINDS = [
    "standard",
    "standard, apply_b_dec_to_input false",
    "topk",
    "jumprelu (per-latent θ)",
    "batchtopk, final file",
    "batchtopk, training checkpoint",
    "matryoshka batchtopk, final file",
]
MATRYOSHKA_WIDTHS = [32, 128, D_SAE]


@pytest.mark.parametrize("kind", SAELENS_KINDS)
def test_saelens_to_sarm(tmp_path, record, kind):
    reference = saelens_files(kind, tmp_path)
    ours = load_sae(tmp_path)  # no k, no options
    if kind.startswith("matryoshka"):  # its prefixes come along, so sarm can train it further as Matryoshka
        assert type(ours) is MatryoshkaBatchTopKSAE and ours.widths == MATRYOSHKA_WIDTHS and ours.k == K
    x = residual_like() / 6  # σ ≈ 1, ‖x‖ ≈ √d: the scale SAELens trains at (normalize_activations)
    with torch.no_grad():
        f = reference.encode(x)
        x_hat = reference.decode(f)
    assert (f > 0).any()
    assert record(f"SAELens {kind}", "SAELens → sarm", f, ours.encode(x), x_hat, ours.decode(f))


def test_sparsify_to_sarm(tmp_path, record):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    coder = SparseCoder(D_IN, SparseCoderConfig(k=K, num_latents=D_SAE))
    with torch.no_grad():
        coder.encoder.bias.copy_(0.1 * torch.randn(D_SAE))
        coder.b_dec.copy_(0.5 * torch.randn(D_IN))
    coder.save_to_disk(tmp_path)
    ours = load_sae(tmp_path)
    x = residual_like() / 6
    with torch.no_grad():
        top = coder.encode(x)
        f = torch.zeros(x.shape[0], D_SAE).scatter(-1, top.top_indices, top.top_acts)
        x_hat = coder.decode(top.top_acts, top.top_indices)
    assert record("sparsify TopK", "sparsify → sarm", f, ours.encode(x), x_hat, ours.decode(f))
