"""Coverage of planted attributes: labels from pairs.jsonl rows, best single-latent F1 per property."""

from __future__ import annotations

import pytest
import torch

from sarm.sae.coverage import coverage, planted_labels

PAIRS = [  # rows as in an activation cache's pairs.jsonl (only the fields that matter here)
    {
        "index": 0,
        "meta": {
            "attribute": "refusal",
            "chosen_signoff": True,
            "rejected_signoff": False,
            "chosen_verbose": False,
            "rejected_verbose": True,
        },
    },
    {
        "index": 1,
        "meta": {
            "attribute": "politeness",
            "chosen_signoff": False,
            "rejected_signoff": True,
            "chosen_verbose": False,
            "rejected_verbose": False,
        },
    },
    {"index": 2},  # not planted: no meta
    {
        "index": 3,
        "meta": {
            "attribute": "refusal",
            "chosen_signoff": True,
            "rejected_signoff": True,
            "chosen_verbose": True,
            "rejected_verbose": False,
            "prompt_id": "p-1",
        },
    },
]


def bools(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def test_planted_labels_from_pairs_rows():
    labels = planted_labels(PAIRS)
    assert set(labels) == {
        "refusal:chosen",
        "refusal:rejected",
        "politeness:chosen",
        "politeness:rejected",
        "signoff",
        "verbose",
    }
    # sequences: pair i → 2i (chosen), 2i + 1 (rejected)
    assert torch.equal(labels["refusal:chosen"], bools(1, 0, 0, 0, 0, 0, 1, 0))
    assert torch.equal(labels["refusal:rejected"], bools(0, 1, 0, 0, 0, 0, 0, 1))
    assert torch.equal(labels["politeness:chosen"], bools(0, 0, 1, 0, 0, 0, 0, 0))
    assert torch.equal(labels["politeness:rejected"], bools(0, 0, 0, 1, 0, 0, 0, 0))
    assert torch.equal(labels["signoff"], bools(1, 0, 0, 1, 0, 0, 1, 1))
    assert torch.equal(labels["verbose"], bools(0, 1, 0, 0, 0, 0, 1, 0))


def test_planted_labels_of_unplanted_data_are_empty():
    assert planted_labels([{"meta": {}}, {"meta": {"source": "hh"}}, {}]) == {}


def test_a_latent_equal_to_a_label_covers_it_perfectly():
    generator = torch.Generator().manual_seed(0)
    label = torch.rand(500, generator=generator) < 0.2
    latents = torch.rand(500, 32, generator=generator) * (torch.rand(500, 32, generator=generator) < 0.3)
    latents[:, 17] = label * (1 + torch.rand(500, generator=generator))  # a positive activation where True
    result = coverage(latents, {"refusal:chosen": label})
    assert result["refusal:chosen"]["f1"] == pytest.approx(1.0)
    assert result["refusal:chosen"]["latent"] == 17
    assert result["refusal:chosen"]["threshold"] == 0.0
    assert result["refusal:chosen"]["precision"] == result["refusal:chosen"]["recall"] == 1.0
    assert result["refusal:chosen"]["support"] == int(label.sum())


def test_random_latents_cover_little():
    generator = torch.Generator().manual_seed(1)
    n = 2000
    labels = {f"attr{i}:chosen": torch.rand(n, generator=generator) < 0.1 for i in range(3)}
    latents = torch.relu(torch.randn(n, 64, generator=generator) - 1.0)  # sparse, unrelated to labels
    result = coverage(latents, labels)
    assert all(result[name]["f1"] < 0.35 for name in labels)
    assert result["mean"]["f1"] < 0.35 and result["mean"]["count"] == 3


def test_threshold_is_a_strict_fraction_of_each_latents_own_maximum():
    #                   activations        label
    # t = 0.0: active > 0    → rows 1, 2, 3   F1 = 2·1 / (3 + 1) = 0.5
    # t = 0.1: active > 1    → rows 2, 3      F1 = 2·1 / (2 + 1) = 0.667
    # t = 0.2: active > 2    → row 3          F1 = 1
    latents = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    label = bools(0, 0, 0, 1)
    assert coverage(latents, {"a:chosen": label}, thresholds=(0.0,))["a:chosen"]["f1"] == pytest.approx(0.5)
    assert coverage(latents, {"a:chosen": label}, thresholds=(0.1,))["a:chosen"]["f1"] == pytest.approx(2 / 3)
    best = coverage(latents, {"a:chosen": label})["a:chosen"]
    assert best == {
        "f1": pytest.approx(1.0),
        "latent": 0,
        "threshold": 0.2,
        "precision": 1.0,
        "recall": 1.0,
        "support": 1,
    }
    # each latent is scaled by its own maximum: a 100× smaller copy of latent 0 is exactly as good
    scaled = torch.cat([latents[:, 1:], latents[:, :1] / 100], dim=1)
    assert coverage(scaled, {"a:chosen": label})["a:chosen"]["latent"] == 1


def test_dead_latents_predict_nothing_and_empty_labels_score_zero():
    latents = torch.zeros(6, 3)
    result = coverage(latents, {"a:chosen": bools(1, 1, 0, 0, 0, 0), "b:chosen": torch.zeros(6, dtype=torch.bool)})
    assert result["a:chosen"]["f1"] == 0.0 and result["b:chosen"]["f1"] == 0.0


def test_means_separate_deciding_attributes_from_distractors():
    latents = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    labels = {
        "refusal:chosen": bools(1, 0, 1, 0),  # latent 0: F1 1
        "refusal:rejected": bools(0, 1, 0, 0),  # latent 1: F1 1
        "signoff": bools(1, 1, 1, 1),
    }  # best: latent 0, F1 = 2·2 / (2 + 4) = 2/3
    result = coverage(latents, labels)
    assert result["mean"] == {"f1": pytest.approx(1.0), "count": 2}
    assert result["mean_distractors"] == {"f1": pytest.approx(2 / 3), "count": 1}


def test_chunking_over_latents_does_not_change_the_answer():
    generator = torch.Generator().manual_seed(2)
    latents = torch.relu(torch.randn(300, 50, generator=generator))
    labels = {f"p{i}:chosen": latents[:, 7 * i] + 0.5 * torch.randn(300, generator=generator) > 1 for i in range(4)}
    whole = coverage(latents, labels, max_elements=10**9)
    chunked = coverage(latents, labels, max_elements=300 * 7)  # chunks of 7 latents
    assert whole == chunked


def test_labels_from_planted_pairs_feed_coverage():
    labels = planted_labels(PAIRS)
    latents = torch.stack([labels["refusal:chosen"].float() * 2, labels["signoff"].float()], dim=1)
    result = coverage(latents, labels)
    assert result["refusal:chosen"]["f1"] == 1.0 and result["refusal:chosen"]["latent"] == 0
    assert result["signoff"]["f1"] == 1.0 and result["signoff"]["latent"] == 1


def test_planted_coverage_reads_labels_the_data_module_hands_over(tiny_cache):
    from types import SimpleNamespace

    from sarm.cache import PairActivationDataModule, TokenActivationDataModule
    from sarm.callbacks.coverage import PlantedCoverage
    from sarm.errors import SarmInputError
    from sarm.sae import SAEModule

    module, callback = SAEModule("topk", 64, 4, d_in=32), PlantedCoverage()
    callback.setup(SimpleNamespace(datamodule=TokenActivationDataModule(str(tiny_cache["cache"]))), module, "fit")
    assert callback.sequences is None  # toy pairs: nothing planted, nothing logged
    with pytest.raises(SarmInputError, match="PlantedCoverage reads planted labels from the data module's planted"):
        callback.setup(SimpleNamespace(datamodule=PairActivationDataModule(str(tiny_cache["cache"]))), module, "fit")
