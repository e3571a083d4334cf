"""A public preference set as its publisher ships it (Anthropic-HH transcripts, gzip-compressed JSON Lines, with
the empty responses and diverging transcripts such sets really hold) goes through cache → SAE → SARM: the bad
rows are all named in one run, or left out, counted and listed with --bad_rows skip."""

from __future__ import annotations

import gzip
import json

import pytest
from commands import cache_pairs, fit_sae, fit_sarm

from sarm.cli import main

GOOD = [
    "I am happy to help: the capital is Paris.",
    "Sure, here is how to bake bread step by step.",
    "Thank you for asking, the answer is 42.",
]
BAD = ["Go away.", "That is a stupid question.", "I will not answer you."]


def transcript(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {turn}" for i, turn in enumerate(turns))


def write_hh_gz(path, n: int = 60) -> dict:
    """HH-style rows; returns the line numbers of each kind of odd row written among them."""
    rows, odd = [], {"empty": [], "diverging": [], "missing": []}
    for i in range(n):
        question = f"Question {i % 20} about the weather?"
        chosen, rejected = GOOD[i % 3] + f" ({i})", BAD[i % 3] + f" ({i})"
        if i % 17 == 5:  # an empty final response: kept, and scored as the bad response it is
            rejected = ""
            odd["empty"].append(i + 1)
        if i % 23 == 7:  # the two transcripts differ before the final turn: a pair of nothing
            rows.append(
                {
                    "chosen": transcript(question, "Hmm.", "Really?", chosen),
                    "rejected": transcript(question + " Please.", rejected),
                }
            )
            odd["diverging"].append(i + 1)
            continue
        if i == 40:
            rows.append({"chosen": transcript(question, chosen)})
            odd["missing"].append(i + 1)
            continue
        rows.append({"chosen": transcript(question, chosen), "rejected": transcript(question, rejected)})
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return odd


@pytest.fixture(scope="module")
def hh(tmp_path_factory):
    root = tmp_path_factory.mktemp("hh")
    odd = write_hh_gz(root / "train.jsonl.gz")
    return root, odd


def test_every_bad_row_is_named_in_one_run_and_nothing_is_written(hh, tiny_model_dir, tmp_path, capsys):
    root, odd = hh
    with pytest.raises(SystemExit) as exit_info:
        main(cache_pairs(root / "train.jsonl.gz", tiny_model_dir, tmp_path / "cache", max_length=None))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    bad_lines = sorted(odd["diverging"] + odd["missing"])
    for line in bad_lines:
        assert f"{root / 'train.jsonl.gz'}:{line}: field '" in err
    assert f"{len(bad_lines)} bad rows" in err and "--bad_rows skip" in err
    assert not (tmp_path / "cache").exists() and list(tmp_path.iterdir()) == []


def test_skipped_rows_are_counted_listed_and_the_rest_trains_a_sarm(hh, tiny_model_dir, tmp_path):
    root, odd = hh
    cache = tmp_path / "cache"
    main(
        cache_pairs(
            root / "train.jsonl.gz",
            tiny_model_dir,
            cache,
            max_length=64,
            bad_rows="skip",
            split_fractions=[0.6, 0.2, 0.2],
        )
    )
    manifest = json.loads((cache / "manifest.json").read_text())
    skipped = [json.loads(line) for line in (cache / "skipped_rows.jsonl").read_text().splitlines()]
    bad_lines = sorted(odd["diverging"] + odd["missing"])
    assert manifest["skipped_rows"] == len(skipped) == len(bad_lines)
    assert [int(row["origin"].rsplit(":", 1)[1]) for row in skipped] == bad_lines
    assert all(row["reason"] and row["row"] for row in skipped)
    assert manifest["num_pairs"] == 60 - len(bad_lines)
    pairs = [json.loads(line) for line in (cache / "pairs.jsonl").read_text().splitlines()]
    assert sum(pair["rejected"] == "" for pair in pairs) == len(odd["empty"])  # kept, as responses

    main(fit_sae(cache, tmp_path, epochs=2))
    main(fit_sarm(cache, tmp_path / "sae", tmp_path, epochs=5))
    metrics = json.loads((tmp_path / "sarm" / "sarm.json").read_text())["metrics"]
    assert metrics["val/accuracy"] > 0.5  # polite vs rude is learnable even by a tiny random backbone


def test_a_saved_datasetdict_is_cached_from_the_split_asked_for(tiny_model_dir, tmp_path):
    import datasets

    rows = {
        name: [
            {"prompt": f"{name} question {i}", "chosen": f"a kind answer {i}", "rejected": f"go away {i}"}
            for i in range(n)
        ]
        for name, n in (("train", 12), ("test", 8))
    }
    datasets.DatasetDict({name: datasets.Dataset.from_list(r) for name, r in rows.items()}).save_to_disk(
        tmp_path / "saved"
    )
    common = ["--data", str(tmp_path / "saved"), "--model", tiny_model_dir, "--layer", "2", "--max_length", "32"]
    main(["cache", *common, "--hf_split", "test", "--output", str(tmp_path / "test")])
    main(["cache", *common, "--output", str(tmp_path / "train")])
    for name, n in (("test", 8), ("train", 12)):
        pairs = [json.loads(line) for line in (tmp_path / name / "pairs.jsonl").read_text().splitlines()]
        assert len(pairs) == n and all(p["prompt"][0]["content"].startswith(name) for p in pairs)
