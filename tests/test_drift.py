"""The feature-drift monitor: reward shares, the bootstrap flags, and ``sarm drift``.

Specifications: a share is scale-free and the shares' magnitudes sum to at most 1; a feature planted to carry more
reward on the samples is flagged and nothing else is; samples from the reference's own distribution flag nothing;
the bootstrap resamples prompts, not responses (duplicating every response of a prompt leaves the interval as it
was); ``sarm drift`` on a sample set equal to its reference flags nothing, its flags are the rows whose lower bound
clears the threshold, and a cache reference gives the shares a preference-file reference of the same pairs gives.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_sarm_export, write_toy_pairs

from sarm.attribution.shares import reward_shares
from sarm.cli import main
from sarm.rl.drift import group_ids, share_drift


def planted_terms(n: int, seed: int, boost: float = 0.0, feature: int = 3) -> torch.Tensor:
    """``[n, 12]`` sparse feature terms of one fixed distribution; ``boost`` adds to ``feature``'s term wherever it
    fires (a distractor the samples push)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 1.5, 12)
    fires = torch.rand(n, 12, generator=g) < 0.4
    terms = (torch.randn(n, 12, generator=g) * 0.3 + scale) * fires
    terms[:, feature] += boost * fires[:, feature]
    return terms


def test_shares_are_scale_free_and_bounded():
    terms = planted_terms(50, 0) - 0.5
    shares = reward_shares(terms)
    torch.testing.assert_close(reward_shares(terms * 7.0), shares)
    assert float(shares.abs().sum()) <= 1 + 1e-12
    torch.testing.assert_close(float(shares.sum()), float(terms.sum() / terms.abs().sum()))
    residual = torch.ones(50)
    assert float(reward_shares(terms, residual).abs().sum()) < float(shares.abs().sum())  # the residual takes mass
    assert reward_shares(torch.zeros(4, 3)).tolist() == [0.0, 0.0, 0.0]


def test_a_planted_rise_is_flagged_and_an_unchanged_sample_is_not():
    reference = planted_terms(600, 0)
    unchanged = share_drift(reference, planted_terms(300, 1), threshold=0.0)
    assert not unchanged.flagged.any() and not unchanged.fell.any()
    pushed = share_drift(reference, planted_terms(300, 1, boost=1.0), threshold=0.01)
    assert pushed.flagged.nonzero().flatten().tolist() == [3]
    assert float(pushed.lower[3]) > 0.01
    # The others' shares fall (feature 3 took mass), which is not a flag.
    assert not pushed.flagged[torch.arange(12) != 3].any()
    # A threshold above the rise flags nothing: τ says what rise matters.
    assert not share_drift(reference, planted_terms(300, 1, boost=1.0), threshold=float(pushed.delta[3])).flagged.any()


def test_the_bootstrap_resamples_prompts_not_responses():
    reference, samples = planted_terms(80, 0), planted_terms(40, 1, boost=0.5)
    once = share_drift(reference, samples, group_ids(range(80)), group_ids(range(40)), resamples=300)
    # Every response four times, the copies under one prompt: the same information, the same interval.
    copies = share_drift(
        reference.repeat_interleave(4, 0),
        samples.repeat_interleave(4, 0),
        group_ids([i // 4 for i in range(320)]),
        group_ids([i // 4 for i in range(160)]),
        resamples=300,
    )
    torch.testing.assert_close(copies.se, once.se)
    # Resampled one by one, the copies would look like four times the data: a narrower, wrong interval.
    naive = share_drift(reference.repeat_interleave(4, 0), samples.repeat_interleave(4, 0), resamples=300)
    assert float(naive.se[3]) < 0.6 * float(once.se[3])


@pytest.fixture(scope="module")
def tiny_sarm(tmp_path_factory, tiny_model_dir):
    return random_sarm_export(tmp_path_factory.mktemp("drift") / "sarm", tiny_model_dir, seed=2, max_length=48)


def responses_of(pairs_file, path, suffix: str = ""):
    """Both sides of every pair as ``prompt`` + ``response`` rows (``suffix`` appended to each response)."""
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    out = [{"prompt": r["prompt"], "response": r[side] + suffix} for r in rows for side in ("chosen", "rejected")]
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def run_drift(model, samples, reference, output, *extra):
    main(["drift", "--model", str(model), "--samples", str(samples), "--reference", str(reference)]
         + ["--output", str(output), "--resamples", "200", *extra])  # fmt: skip
    return json.loads((output / "drift.json").read_text())


def test_sarm_drift_flags_nothing_on_its_own_reference_and_flags_by_its_rule(tiny_sarm, tmp_path):
    pairs = write_toy_pairs(tmp_path / "pairs.jsonl", n=24)
    same = run_drift(
        tiny_sarm, responses_of(pairs, tmp_path / "same.jsonl"), pairs, tmp_path / "same", "--threshold", "0"
    )
    assert same["flagged"] == [] and same["sample_responses"] == same["reference_responses"] == 48
    assert same["reference_prompts"] == same["sample_prompts"] == 16
    for row in same["features"]:
        assert row["share_samples"] == pytest.approx(row["share_reference"], abs=1e-6)
    assert (tmp_path / "same" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pushed_file = responses_of(pairs, tmp_path / "pushed.jsonl", " thank you thank you thank you thank you")
    pushed = run_drift(tiny_sarm, pushed_file, pairs, tmp_path / "pushed", "--threshold", "0.01")
    assert pushed["flagged"] == [r["feature"] for r in pushed["features"] if r["lower"] > 0.01]
    assert [r["delta"] for r in pushed["features"]] == sorted((r["delta"] for r in pushed["features"]), reverse=True)
    assert pushed["flagged"], "a suffix a third the length of each response moves some feature's share"


def test_a_cache_reference_gives_the_shares_of_its_pairs_file(tiny_sarm, tiny_cache, tmp_path):
    samples = responses_of(tiny_cache["data"], tmp_path / "samples.jsonl")
    from_cache = run_drift(tiny_sarm, samples, tiny_cache["cache"], tmp_path / "c", "--split", "all")
    from_file = run_drift(tiny_sarm, samples, tiny_cache["data"], tmp_path / "f")
    assert from_cache["reference_responses"] == from_file["reference_responses"] == 96
    shares = {r["feature"]: r["share_reference"] for r in from_file["features"]}
    for row in from_cache["features"]:
        assert row["share_reference"] == pytest.approx(shares.get(row["feature"], 0.0), abs=2e-3)
