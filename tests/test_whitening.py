"""PCA whitening: identity covariance, exact inverse, streaming fit, and folding into every SAE kind."""

from __future__ import annotations

import pytest
import torch

from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE
from sarm.sae.whitening import CovarianceAccumulator, PCAWhitening, fold_whitening, whitened_forward

D, N_LATENTS = 12, 48


def correlated_sample(n: int = 4000, d: int = D, seed: int = 0) -> torch.Tensor:
    """Gaussian data with a large offset and mixed variances spanning four orders of magnitude."""
    generator = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=generator)).Q
    mixing = torch.logspace(-1, 1, d)[:, None] * rotation
    return torch.randn(n, d, generator=generator) @ mixing + 5.0 * torch.randn(d, generator=generator)


def population_covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.double() - x.double().mean(0)
    return x.T @ x / x.shape[0]


def test_whitened_sample_has_zero_mean_and_identity_covariance():
    x = correlated_sample()
    whitening = PCAWhitening.fit(x, eps=1e-8)
    z = whitening.whiten(x)
    assert z.mean(0).abs().max() < 1e-4
    assert torch.allclose(population_covariance(z), torch.eye(D, dtype=torch.float64), atol=1e-4)


def test_unwhiten_inverts_whiten():
    x = correlated_sample()
    whitening = PCAWhitening.fit(x)
    assert torch.allclose(whitening.unwhiten(whitening.whiten(x)), x, atol=1e-4)
    assert torch.allclose(
        whitening.whiten_matrix.double() @ whitening.unwhiten_matrix.double(),
        torch.eye(D, dtype=torch.float64),
        atol=1e-5,
    )


def test_streaming_accumulator_matches_a_single_fit():
    x = correlated_sample()
    accumulator = CovarianceAccumulator(D)
    for batch in x.split(333):
        accumulator.update(batch)
    streamed, whole = accumulator.finalize(1e-4), PCAWhitening.fit(x, 1e-4)
    mean, covariance = accumulator.moments()
    assert torch.allclose(mean, x.double().mean(0), atol=1e-9)
    assert torch.allclose(covariance, population_covariance(x), atol=1e-9)
    assert torch.allclose(streamed.whiten(x), whole.whiten(x), atol=1e-4)


def test_eps_is_relative_to_the_mean_eigenvalue():
    """Scaling the data by c scales the whitening by 1/c: the same eps regularizes both alike."""
    x = correlated_sample()
    small, large = PCAWhitening.fit(x, eps=0.1), PCAWhitening.fit(1000 * x, eps=0.1)
    assert torch.allclose(small.whiten(x), large.whiten(1000 * x), atol=1e-4)
    # the regularized eigenvalues are λ + eps · mean(λ): whitened variances λ / (λ + eps · mean λ) < 1
    variances = population_covariance(small.whiten(x)).diagonal()
    expected = small.eigenvalues.double() / (small.eigenvalues.double() + 0.1 * small.eigenvalues.double().mean())
    assert torch.allclose(variances.sort().values, expected.sort().values, atol=1e-4)


def test_eps_keeps_a_rank_deficient_covariance_finite():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(500, 3, generator=generator) @ torch.randn(3, D, generator=generator)  # rank 3 of 12
    whitening = PCAWhitening.fit(x, eps=1e-4)
    z = whitening.whiten(x)
    assert torch.isfinite(whitening.whiten_matrix).all() and torch.isfinite(z).all()
    assert torch.allclose(whitening.unwhiten(z), x, atol=1e-3)
    # the 3 real directions are whitened, the 9 empty ones stay (near) empty rather than exploding
    variances = population_covariance(z).diagonal().sort(descending=True).values
    assert torch.allclose(variances[:3], torch.ones(3, dtype=torch.float64), atol=1e-3)
    assert variances[3:].max() < 1e-3


def test_constant_data_gives_a_finite_map():
    whitening = PCAWhitening.fit(torch.ones(10, D))
    assert torch.isfinite(whitening.whiten(torch.ones(2, D))).all()


def random_sae(kind: str, input_norm: str, z_sample: torch.Tensor):
    torch.manual_seed(0)
    if kind == "topk":
        sae = TopKSAE(D, N_LATENTS, k=5, input_norm=input_norm)
    elif kind == "batchtopk":
        sae = BatchTopKSAE(D, N_LATENTS, k=5, input_norm=input_norm)
    else:
        sae = ReLUSAE(D, N_LATENTS, input_norm=input_norm)
    with torch.no_grad():  # non-trivial biases, so that the folded b_dec' = μ + b_dec @ U is exercised
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
    sae.eval()
    if kind == "batchtopk":  # a threshold in the middle of the positive pre-activations
        pre = sae.pre_activations(z_sample).detach()
        sae.threshold.fill_(float(pre[pre > 0].median()))
    return sae


@pytest.mark.parametrize("input_norm", ["none", "standardize"])
@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu"])
@torch.no_grad()
def test_folded_sae_reads_the_unwhitened_space_exactly(kind, input_norm):
    x = correlated_sample()
    # whitening is fitted where it sits: after the SAE's own preprocessing
    preprocess = TopKSAE(D, 1, 1, input_norm).preprocess
    whitening = PCAWhitening.fit(preprocess(x))
    sae = random_sae(kind, input_norm, whitening.whiten(preprocess(x)))

    reference = whitened_forward(sae, whitening, x[:256])
    folded = fold_whitening(sae, whitening)
    out = folded(x[:256])

    assert type(folded) is type(sae) and folded.config() == sae.config()
    assert not folded.training and folded.input_norm == input_norm
    assert (out.latents > 0).float().sum(-1).mean() > 0  # the check is not vacuous
    scale = float(reference.x_hat.abs().max())
    assert torch.allclose(out.latents, reference.latents, atol=1e-4 * float(reference.latents.abs().max()))
    assert torch.allclose(out.x_hat, reference.x_hat, atol=1e-4 * scale)
    assert torch.allclose(out.x, reference.x)
    # the original SAE is untouched
    assert torch.equal(sae.W_enc, random_sae(kind, input_norm, whitening.whiten(preprocess(x))).W_enc)


@torch.no_grad()
def test_with_input_norm_none_the_whitened_path_is_literally_unwhiten_of_sae_of_whiten():
    x = correlated_sample()
    whitening = PCAWhitening.fit(x)
    sae = random_sae("topk", "none", whitening.whiten(x))
    direct = whitening.unwhiten(sae(whitening.whiten(x[:64])).x_hat)
    assert torch.allclose(fold_whitening(sae, whitening)(x[:64]).x_hat, direct, atol=1e-4 * float(direct.abs().max()))


def test_folded_decoder_rows_are_no_longer_unit_norm():
    x = correlated_sample()
    whitening = PCAWhitening.fit(x)
    sae = random_sae("relu", "none", whitening.whiten(x))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(N_LATENTS))
    assert not torch.allclose(fold_whitening(sae, whitening).W_dec.norm(dim=1), torch.ones(N_LATENTS))


def test_whitening_state_dict_round_trips():
    whitening = PCAWhitening.fit(correlated_sample())
    restored = PCAWhitening(D)
    restored.load_state_dict(whitening.state_dict())
    x = correlated_sample(10, seed=3)
    assert torch.equal(restored.whiten(x), whitening.whiten(x))
