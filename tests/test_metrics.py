"""SAE metrics: the definitions of Gao et al. (arXiv 2406.04093) and SAEBench, and independence from how the data is
batched."""

import torch

from sarm.sae.base import SAEOutput
from sarm.sae.metrics import LatentFrequency, ReconstructionMetrics


def test_fvu_is_zero_for_perfect_and_one_for_mean_reconstruction():
    x = torch.randn(100, 8) + 5
    perfect, mean = ReconstructionMetrics(8), ReconstructionMetrics(8)
    perfect.update(x, x)
    mean.update(x, x.mean(0).expand_as(x))
    assert perfect.compute()["fvu"].item() == 0.0
    assert abs(mean.compute()["fvu"].item() - 1.0) < 1e-6
    assert abs(perfect.compute()["cosine"].item() - 1.0) < 1e-6
    assert abs(perfect.compute()["relative_bias"].item() - 1.0) < 1e-6


def test_reconstruction_metrics_do_not_depend_on_batching():
    x, x_hat = torch.randn(90, 8) * 3 + 1, torch.randn(90, 8)
    whole, chunks = ReconstructionMetrics(8), ReconstructionMetrics(8)
    whole.update(x, x_hat)
    for a, b in zip(x.split(7), x_hat.split(7)):
        chunks.update(a, b)
    expected = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    torch.testing.assert_close(whole.compute()["fvu"], expected, rtol=1e-5, atol=0)
    for key, value in whole.compute().items():
        torch.testing.assert_close(chunks.compute()[key], value, rtol=1e-5, atol=1e-6)


def test_shrunk_reconstructions_have_relative_bias_below_one():
    x = torch.randn(50, 8)
    metric = ReconstructionMetrics(8)
    metric.update(x, 0.5 * x)
    torch.testing.assert_close(metric.compute()["relative_bias"], torch.tensor(0.5))


def test_l0_dead_and_dense_fractions():
    metric = LatentFrequency(4, dense_above=0.5)
    for latents in (
        torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.5]]),
    ):
        metric.update(SAEOutput(latents, latents, latents).firing_counts(), tokens=2)
    out = metric.compute()
    assert out["l0"].item() == 1.5  # 6 active entries over 4 tokens
    assert out["dead_fraction"].item() == 0.25  # latent 2 never fired
    assert out["dense_fraction"].item() == 0.25  # latent 0 fires on every token
