"""``sarm rerank`` (best-of-n) on a tiny SARM.

Specifications: each row's rewards are ``RewardModel.score``'s for its prompt and candidates, the chosen one is the
highest (a tie to the earlier), the margin is its reward less the runner-up's and splits exactly into the listed
feature terms, largest first; plain and conversational rows of the same texts get the same rewards; one candidate
has no runner-up; every bad row is named (file, line, field) in one error and nothing is written.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_sarm_export

from sarm.cli import main
from sarm.reward.inference import RewardModel
from sarm.rl.rerank import choose

ROWS = [
    {"id": "a", "prompt": "what is the capital of france", "candidates": ["paris", "the capital is paris", "go away"]},
    {"id": "b", "prompt": "please write a python function", "candidates": ["def add(a, b): return a + b", "no"]},
    {"id": "c", "prompt": "thank you", "candidates": ["happy to help with that"]},
]


@pytest.fixture(scope="module")
def sarm_export(tmp_path_factory, tiny_model_dir):
    return random_sarm_export(tmp_path_factory.mktemp("rerank") / "sarm", tiny_model_dir, seed=1, max_length=64)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rerank(model, data, output, *extra):
    main(["rerank", "--model", str(model), "--data", str(data), "--output", str(output), *extra])
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_rerank_keeps_the_best_and_splits_its_margin_into_features(sarm_export, tmp_path):
    out = rerank(sarm_export, write_jsonl(tmp_path / "in.jsonl", ROWS), tmp_path / "out.jsonl", "--top_features", "64")
    rm = RewardModel.load(sarm_export)
    assert [r["id"] for r in out] == ["a", "b", "c"] and [r["row"] for r in out] == [0, 1, 2]
    for row, result in zip(ROWS, out):
        n = len(row["candidates"])
        scores = rm.score([[{"role": "user", "content": row["prompt"]}]] * n, row["candidates"])
        assert result["rewards"] == pytest.approx(scores.rewards.tolist(), abs=1e-5)
        assert result["chosen"] == int(scores.rewards.argmax())
        assert result["response"] == row["candidates"][result["chosen"]]
        if n == 1:
            assert result["runner_up"] is None and result["margin"] is None and result["decisive_features"] == []
            continue
        second = int(scores.rewards.topk(2).indices[1])
        assert result["runner_up"] == second
        assert result["margin"] == pytest.approx(float(scores.rewards[result["chosen"]] - scores.rewards[second]))
        terms = [f["contribution"] for f in result["decisive_features"]]
        assert sum(terms) == pytest.approx(result["margin"], abs=1e-5)  # all non-zero terms: the exact split
        assert [abs(t) for t in terms] == sorted((abs(t) for t in terms), reverse=True)
        with torch.no_grad():
            expected = rm.feature_head.contributions(scores.features[result["chosen"]] - scores.features[second])
        for f in result["decisive_features"]:
            assert f["contribution"] == pytest.approx(float(expected[f["feature"]]), abs=1e-6)

    top2 = rerank(sarm_export, tmp_path / "in.jsonl", tmp_path / "top2.jsonl", "--top_features", "2")
    assert [r["decisive_features"] for r in top2] == [r["decisive_features"][:2] for r in out]


def test_conversational_rows_rerank_as_plain_ones(sarm_export, tmp_path):
    chat = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "candidates": [[{"role": "assistant", "content": c}] for c in r["candidates"]],
        }
        for r in ROWS
    ]
    plain = rerank(sarm_export, write_jsonl(tmp_path / "plain.jsonl", ROWS), tmp_path / "p.jsonl")
    conversational = rerank(sarm_export, write_jsonl(tmp_path / "chat.jsonl", chat), tmp_path / "c.jsonl")
    for p, c in zip(plain, conversational):
        assert c["rewards"] == pytest.approx(p["rewards"], abs=1e-6)
        assert c["chosen"] == p["chosen"]


def test_a_tie_goes_to_the_earlier_candidate_and_a_non_finite_reward_is_never_chosen(sarm_export):
    rm = RewardModel.load(sarm_export)
    features = torch.rand(3, 64)
    tie = choose(rm, torch.tensor([1.0, 2.0, 2.0]), features, None, 5)
    assert (tie["chosen"], tie["runner_up"], tie["margin"]) == (1, 2, 0.0)
    nan = choose(rm, torch.tensor([float("nan"), 0.5, 1.5]), features, None, 5)
    assert (nan["chosen"], nan["runner_up"], nan["rewards"][0]) == (2, 1, None)
    none = choose(rm, torch.tensor([float("nan"), float("inf")]), features[:2], None, 5)
    assert none["chosen"] is None and none["rewards"] == [None, None]


def test_every_bad_row_is_named_and_nothing_is_written(sarm_export, tmp_path, capsys):
    bad = [
        ROWS[0],
        {"prompt": "x"},
        {"prompt": "x", "candidates": "one answer"},
        {"prompt": "x", "candidates": []},
        {"prompt": "x", "candidates": ["fine", 3]},
        {"prompt": "x", "candidates": ["fine", [{"role": "user", "content": "not a reply"}]]},
        {"prompt": 7, "candidates": ["fine"]},
    ]
    data = write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["rerank", "--model", str(sarm_export), "--data", str(data), "--output", str(tmp_path / "o.jsonl")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{data}:2: field 'candidates': missing" in err
    assert f"{data}:3: field 'candidates': expected a list of responses" in err
    assert f"{data}:4: field 'candidates': empty" in err
    assert f"{data}:5: field 'candidates[1]': expected text or an assistant message" in err
    assert f"{data}:6: field 'candidates[1]': the final turn is from 'user'" in err
    assert f"{data}:7: field 'prompt'" in err
    assert "6 bad rows in all" in err
    assert not (tmp_path / "o.jsonl").exists()
