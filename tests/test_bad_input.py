"""The bad-input corpus: every malformed preference file a user might hand to `sarm cache`.

Each case runs the real command line. An error must exit with status 2, print one
``sarm: error: <file>:<line or row>: field '<name>': <reason>`` line (no traceback; the lines after
it list further bad rows and their total) and leave the output directory untouched; a documented
skip must print its count and still produce a cache. Rows that are valid by the documented rules
but look odd (empty responses) must go through to the cache. tests/test_mutation_corpus.py adds
cases generated from valid files.
"""

from __future__ import annotations

import gzip
import json

import pytest
from commands import cache_pairs

from sarm.cli import main

GOOD = {"prompt": "what is the capital of france", "chosen": "paris is the capital", "rejected": "go away"}
OTHER = {"prompt": "hello how are you", "chosen": "I am fine thank you", "rejected": "that is a stupid question"}


def jsonl(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def row(**fields) -> str:
    return json.dumps({**GOOD, **fields})


def conversation(*turns: tuple[str, object]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def parquet_bytes(table: dict) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(table), buffer)
    return buffer.getvalue()


# (case id, file name, content, expected message after "sarm: error: <path>")
ERRORS = [
    ("malformed-json", "d.jsonl", jsonl(row(), '{"prompt": "q", "chosen": "a", '), ":2: invalid JSON"),
    ("not-an-object", "d.jsonl", jsonl(row(), '["q", "a", "b"]'), ":2: expected a JSON object"),
    (
        "missing-field",
        "d.jsonl",
        jsonl(row(), json.dumps({"prompt": "q", "chosen": "a"})),
        ":2: field 'rejected': missing",
    ),
    ("empty-conversation", "d.jsonl", jsonl(row(), row(rejected=[])), ":2: field 'rejected': empty conversation"),
    (
        "response-row-in-pair-file",
        "d.jsonl",
        jsonl(row(), json.dumps({"prompt": "q", "response": "a"})),
        ":2: field 'chosen': missing",
    ),
    ("number-for-text", "d.jsonl", jsonl(row(chosen=5)), ":1: field 'chosen': "),
    ("number-for-prompt", "d.jsonl", jsonl(row(), row(prompt=7)), ":2: field 'prompt': "),
    ("null-field", "d.jsonl", jsonl(row(rejected=None)), ":1: field 'rejected': "),
    (
        "message-without-role",
        "d.jsonl",
        jsonl(json.dumps({"chosen": [{"content": "a"}], "rejected": conversation(("assistant", "b"))})),
        ":1: field 'chosen': ",
    ),
    ("message-content-not-text", "d.jsonl", jsonl(row(chosen=conversation(("assistant", 1)))), ":1: field 'chosen': "),
    (
        "no-assistant-turn",
        "d.jsonl",
        jsonl(
            json.dumps(
                {
                    "chosen": conversation(("user", "q"), ("user", "a")),
                    "rejected": conversation(("user", "q"), ("assistant", "b")),
                }
            )
        ),
        ":1: field 'chosen': ",
    ),
    (
        "conversations-diverge-early",
        "d.jsonl",
        jsonl(
            json.dumps(
                {
                    "chosen": conversation(("user", "q"), ("assistant", "a")),
                    "rejected": conversation(("user", "other"), ("assistant", "b")),
                }
            )
        ),
        ":1: field 'rejected': ",
    ),
    (
        "mixed-conversation-and-text",
        "d.jsonl",
        jsonl(json.dumps({"chosen": conversation(("assistant", "a")), "rejected": "b"})),
        ":1: field 'rejected': ",
    ),
    ("margin-not-a-number", "d.jsonl", jsonl(row(), row(margin="big")), ":2: field 'margin': "),
    ("margin-boolean", "d.jsonl", jsonl(row(margin=True)), ":1: field 'margin': "),
    ("non-utf8-jsonl", "d.jsonl", jsonl(row()) + b'{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n', ":2: "),
    ("non-utf8-csv", "d.csv", b"prompt,chosen,rejected\nq,a,b\nq,a\xff,b\n", ":3: "),
    ("csv-bad-margin", "d.csv", b"prompt,chosen,rejected,margin\nq,a,b,1\nq2,c,d,lots\n", ":row 2: field 'margin': "),
    (
        "json-array-bad-field",
        "d.json",
        json.dumps([GOOD, {**GOOD, "chosen": {"text": "a"}}]).encode(),
        ":row 2: field 'chosen': expected text",
    ),
    ("gzip-bad-row", "d.jsonl.gz", gzip.compress(jsonl(row(), row(), row(margin="big"))), ":3: field 'margin': "),
    (
        "gzip-truncated",
        "d.jsonl.gz",
        gzip.compress(jsonl(*[row(chosen=f"answer {i}") for i in range(50)]))[:-40],
        ": truncated gzip stream at line ",
    ),
    ("gzip-not-gzip", "d.jsonl.gz", jsonl(row()), ": not a valid gzip file"),
    ("empty-file", "d.jsonl", b"", ": holds no preference pairs"),
    ("blank-lines-only", "d.jsonl", b"\n\n  \n", ": holds no preference pairs"),
    ("only-identical-pairs", "d.jsonl", jsonl(row(rejected=GOOD["chosen"])), ": holds no preference pairs"),
    ("unknown-format", "d.txt", b"prompt chosen rejected", ": unknown file type"),
    ("not-parquet", "d.parquet", b"not parquet at all", ": cannot read as Parquet"),
    (
        "parquet-wrong-schema",
        "d.parquet",
        parquet_bytes({"prompt": ["q"], "answer": ["a"], "rejected": ["b"]}),
        ":row 1: field 'chosen': missing",
    ),
]


@pytest.fixture()
def cache_command(tiny_model_dir, tmp_path):
    def run(data) -> list[str]:
        return cache_pairs(data, tiny_model_dir, tmp_path / "cache", split_fractions=[0.5, 0.25, 0.25])

    return run


@pytest.mark.parametrize("name, content, message", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_bad_input_is_a_named_error_and_writes_nothing(tmp_path, capsys, cache_command, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        main(cache_command(path))
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("sarm: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"sarm: error: {path}{message}"), err
    assert not (tmp_path / "cache").exists()


def test_every_bad_row_is_reported_in_one_run(tmp_path, capsys, cache_command):
    """Twelve bad rows: one error, naming the first eleven by line, then the total; nothing written."""
    lines = [row()]
    for i in range(12):
        lines += [row(prompt=f"q{i}", chosen=f"a{i}"), row(prompt=f"q{i}", rejected=None)]
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(*lines))
    with pytest.raises(SystemExit) as exit_:
        main(cache_command(path))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    first, *more = err[err.index("sarm: error:") :].splitlines()
    assert first == f"sarm: error: {path}:3: field 'rejected': missing (null)"
    assert more[:10] == [f"{path}:{line}: field 'rejected': missing (null)" for line in range(5, 25, 2)]
    assert more[10].startswith("... and 1 more bad rows (12 in all); pass --bad_rows skip")
    assert not (tmp_path / "cache").exists()


def test_empty_responses_are_kept_and_cached(tmp_path, capsys, cache_command):
    """Empty and whitespace-only responses (formerly errors) are responses: they reach the cache."""
    rows = [{**GOOD, "rejected": ""}, {**OTHER, "chosen": " \t\n "}, {"prompt": "q", "chosen": "", "rejected": "no"}]
    rows += [{"prompt": f"question {i}", "chosen": f"answer {i}", "rejected": f"no {i}"} for i in range(6)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(cache_command(path))
    cached = [json.loads(line) for line in (tmp_path / "cache" / "pairs.jsonl").read_text().splitlines()]
    assert len(cached) == len(rows)
    sides = {(pair["chosen"], pair["rejected"]) for pair in cached}
    assert {(GOOD["chosen"], ""), (" \t\n ", OTHER["rejected"]), ("", "no")} <= sides


def test_the_corpus_is_at_least_twenty_cases():
    assert len(ERRORS) >= 20 and len({case[0] for case in ERRORS}) == len(ERRORS)


def test_missing_file_is_named(tmp_path, capsys, cache_command):
    with pytest.raises(SystemExit):
        main(cache_command(tmp_path / "nowhere.jsonl"))
    assert capsys.readouterr().err.startswith(f"sarm: error: {tmp_path / 'nowhere.jsonl'}: no such file")


def test_skips_are_counted_and_long_prompts_are_cut_from_the_left(tmp_path, capsys, cache_command):
    """Identical sides and repeated rows are skipped (counted); a prompt longer than max_length is kept
    with its beginning cut, so the response survives (counted in the manifest)."""
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)
    rows = [GOOD, OTHER, {**GOOD, "rejected": GOOD["chosen"]}, GOOD, {**OTHER, "prompt": long_prompt}]
    for i in range(6):
        rows.append({"prompt": f"question {i}", "chosen": f"answer {i}", "rejected": f"no {i}"})
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(cache_command(path))
    err = capsys.readouterr().err
    assert "skipped 1 rows whose chosen and rejected responses are identical (lines/rows 3)" in err
    assert "skipped 1 rows repeating an earlier pair (lines/rows 4)" in err
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["num_pairs"] == 9
    assert manifest["truncated_sequences"] == 2  # both sides of the long-prompt pair
    assert "2 of 18 sequences were longer than max_length = 48 tokens" in err


def test_k_above_the_number_of_latents_is_refused_before_training(tiny_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--model",
                "sarm.sae.SAEModule",
                "--model.n_latents",
                "16",
                "--model.k",
                "32",
                "--data",
                "sarm.cache.TokenActivationDataModule",
                "--data.cache_dir",
                str(tiny_cache["cache"]),
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    assert exit_.value.code == 2
    assert "sarm: error: model.k = 32: a topk SAE keeps 1..n_latents (16) latents" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.ckpt"))
