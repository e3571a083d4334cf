"""SAE quality as the field measures it: first-letter absorption on a toy SAE whose absorption is known by
construction, and k-sparse probing whose latent selection reads train labels only."""

from __future__ import annotations

import pytest
import torch

from sarm.sae import JumpReLUSAE
from sarm.sae.absorption import absorption, word_absorption, word_splits
from sarm.sae.sparse_probing import chosen_labels, response_splits, sparse_probing

N_A, N_OTHER = 40, 40  # a-words (every other one absorbed) and words of other letters


def toy_absorbing_sae() -> tuple[JumpReLUSAE, torch.Tensor, list[str], set[int]]:
    """Word w has its own direction e_{w+1}; every a-word also carries the letter direction e_0 (x = e_0 + e_{w+1}).

    Latent 0 ("starts with a") reads e_0 minus the absorbed words' directions, so it fires on the other a-words only.
    A plain a-word w has a token latent with decoder e_{w+1}; an absorbed one an absorbing latent with decoder
    (e_0 + e_{w+1})/√2 and activation √2, which reconstructs e_0 itself. Other words have token latents.
    """
    n_words = N_A + N_OTHER
    d = 1 + n_words
    absorbed = set(range(1, N_A, 2))
    sae = JumpReLUSAE(d, 1 + n_words, input_norm="none")
    W_enc, W_dec = torch.zeros(d, 1 + n_words), torch.zeros(1 + n_words, d)
    W_enc[0, 0], W_dec[0, 0] = 1.0, 1.0
    for w in range(n_words):
        latent, direction = 1 + w, 1 + w
        if w in absorbed:
            W_enc[direction, 0] = -1.0  # latent 0 is silent on absorbed words
            W_enc[direction, latent] = 2**0.5
            W_dec[latent, 0] = W_dec[latent, direction] = 2**-0.5
        else:
            W_enc[direction, latent] = 1.0
            W_dec[latent, direction] = 1.0
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.fill_(0.5)
    x = torch.zeros(n_words, d)
    for w in range(n_words):
        x[w, 1 + w] = 1.0
        if w < N_A:
            x[w, 0] = 1.0
    letters = ["a"] * N_A + ["b"] * N_OTHER
    return sae, x, letters, absorbed


def test_absorption_on_a_toy_sae_equals_the_absorbed_share_of_test_words():
    sae, x, letters, absorbed = toy_absorbing_sae()
    torch.testing.assert_close(sae.decode(sae.encode(x)), x)  # it reconstructs every word exactly
    splits = word_splits(len(letters), seed=0)
    test_a = [w for w in splits["test"].tolist() if w < N_A]
    correct = torch.zeros(len(letters), dtype=torch.bool)
    correct[test_a] = True
    probes = {"a": {"direction": torch.eye(x.shape[1])[0], "f1": 1.0, "correct": correct}}
    result = absorption(sae, x, letters, splits, probes)
    expected = sum(w in absorbed for w in test_a) / len(test_a)
    assert 0 < expected < 1
    assert result["letters"] == 1 and result["per_letter"]["a"]["main_latents"] == [0]
    assert result["fraction"] == pytest.approx(expected) and result["full"] == pytest.approx(expected)


def test_word_absorption_partial_and_none():
    cosines = torch.tensor([1.0, 0.7, 0.05])
    active = torch.tensor([True, True, True])
    # the main latent carries half of the projection, an aligned absorber the other half: fraction ½, not full
    assert word_absorption(1.0, torch.tensor([0.5, 0.5, 0.0]), cosines, active, [0]) == (0.5, False)
    # the main latent carries it all: nothing absorbed
    assert word_absorption(1.0, torch.tensor([1.0, 0.3, 0.0]), cosines, active, [0]) == (0.0, False)
    # a latent that is not aligned with the probe (cos < 0.1) does not absorb
    assert word_absorption(1.0, torch.tensor([0.0, 0.0, 0.9]), cosines, active, [0])[0] == 0.0


def test_k_sparse_selection_reads_train_labels_only():
    torch.manual_seed(0)
    pairs = [{"split": ("train", "val", "test")[i % 3], "prompt_id": str(i)} for i in range(60)]
    splits = response_splits(pairs)
    features = torch.rand(120, 20)
    label = chosen_labels(pairs)["chosen"]
    features[label, 3] += 1.0  # latent 3 tells chosen from rejected
    result = sparse_probing(features, {"chosen": label}, splits)
    assert result["properties"]["chosen"]["sparse1_latents"] == [3]
    assert result["properties"]["chosen"]["sparse1_f1"] == pytest.approx(1.0)
    # relabel val and test at random: the selection (train only) is unchanged; only the scores move
    shuffled = label.clone()
    for split in ("val", "test"):
        rows = splits[split]
        shuffled[rows] = label[rows][torch.randperm(len(rows))]
    again = sparse_probing(features, {"chosen": shuffled}, splits)["properties"]["chosen"]
    for k in (1, 5):
        assert again[f"sparse{k}_latents"] == result["properties"]["chosen"][f"sparse{k}_latents"]
