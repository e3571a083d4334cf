"""SAE metrics: definitions from BRIEF §2, and independence from how the data is batched."""

import torch

from sarm.sae.metrics import DeadFraction, FractionOfVarianceUnexplained, MeanL0


def test_fvu_is_zero_for_perfect_and_one_for_mean_reconstruction():
    x = torch.randn(100, 8) + 5
    perfect, mean = FractionOfVarianceUnexplained(8), FractionOfVarianceUnexplained(8)
    perfect.update(x, x)
    mean.update(x, x.mean(0).expand_as(x))
    assert perfect.compute().item() == 0.0
    assert abs(mean.compute().item() - 1.0) < 1e-6


def test_fvu_does_not_depend_on_batching():
    x, x_hat = torch.randn(90, 8) * 3 + 1, torch.randn(90, 8)
    whole, chunks = FractionOfVarianceUnexplained(8), FractionOfVarianceUnexplained(8)
    whole.update(x, x_hat)
    for a, b in zip(x.split(7), x_hat.split(7)):
        chunks.update(a, b)
    expected = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    torch.testing.assert_close(whole.compute(), expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(chunks.compute(), expected, rtol=1e-5, atol=0)


def test_l0_counts_active_latents_per_token():
    metric = MeanL0()
    metric.update(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))  # top-k values; zeros are inactive
    assert metric.compute().item() == 1.5


def test_dead_fraction_is_the_share_of_latents_that_never_fired():
    metric = DeadFraction(10)
    metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[2, 5]]))  # 5 had value 0: not fired
    metric.update(torch.tensor([[2.0, 3.0]]), torch.tensor([[2, 7]]))
    assert abs(metric.compute().item() - 0.8) < 1e-6
