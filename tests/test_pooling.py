"""Pooling reads the right tokens under left and right padding."""

import pytest
import torch

from sarm.reward.pooling import last_positions, pool


def identity(x):
    return x


def test_last_position_is_the_last_response_token_on_either_padding_side():
    right = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    left = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    assert last_positions(right).tolist() == [2, 4]
    assert last_positions(left).tolist() == [4, 4]


def test_last_and_mean_pooling_read_only_response_tokens():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "last", identity), torch.stack([hidden[0, 2], hidden[1, 0]]))
    torch.testing.assert_close(
        pool(hidden, mask, "mean", identity), torch.stack([hidden[0, 1:3].mean(0), hidden[1, 0]])
    )


def test_the_token_map_only_sees_the_tokens_that_are_read():
    seen = []
    hidden, mask = torch.randn(3, 6, 2), torch.tensor([[0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1]])

    def record(x):
        seen.append(x.shape[0])
        return x

    pool(hidden, mask, "mean", record)
    pool(hidden, mask, "last", record)
    assert seen == [7, 3]


def test_a_sequence_without_response_tokens_is_an_error():
    with pytest.raises(ValueError, match="no response token"):
        pool(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]), "last", identity)


def test_mean_pooling_of_topk_pairs_equals_pooling_the_dense_latents_in_value_and_gradient():
    """SARM pools a TopK SAE's (value, index) pairs without building [tokens, n_latents]: same result."""
    from sarm.reward.network import SARMNetwork
    from sarm.sae import TopKSAE

    torch.manual_seed(0)
    network = SARMNetwork(TopKSAE(8, 64, 4), pooling="mean")
    torch.nn.init.normal_(network.head.weight)
    hidden = torch.randn(3, 7, 8, dtype=torch.float64)
    network = network.double()
    mask = torch.tensor([[0, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
    compact = network(hidden, mask)
    (grad_compact,) = torch.autograd.grad(compact.sum(), network.sae.encoder)
    dense = network.head(pool(hidden, mask, "mean", lambda h: network.sae(h).latents))
    (grad_dense,) = torch.autograd.grad(dense.sum(), network.sae.encoder)
    torch.testing.assert_close(compact, dense)
    torch.testing.assert_close(grad_compact, grad_dense)
