"""Public preference data as publishers ship it: gzip files, save_to_disk directories, HH transcripts
with empty responses and diverging turns, and the bad-rows policy that reports or skips all bad rows."""

from __future__ import annotations

import gzip
import json

import pytest

from sarm.cache.settings import data_fingerprint
from sarm.data.preference import SKIP_HINT, iter_preferences, load_preferences
from sarm.errors import BadRowsError, PreferenceDataError, SarmInputError

ROWS = [
    {"prompt": "what is the capital of france", "chosen": "paris", "rejected": "london", "margin": 1.5, "id": "a"},
    {"prompt": "hello how are you", "chosen": "fine thank you", "rejected": "go away", "id": "b"},
    {"prompt": "what is two plus two", "chosen": "four", "rejected": "five", "id": "c"},
]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def jsonl_bytes(rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def as_tuple(pair):
    return (pair.prompt, pair.chosen, pair.rejected, pair.margin, pair.prompt_id, pair.meta)


def hh(*turns: str) -> str:
    """An Anthropic-HH transcript: alternating Human / Assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}:{' ' + t if t else ''}" for i, t in enumerate(turns))


def hh_public_rows():
    """Rows as in the public HH set: mostly good, one empty final response, one pair diverging early."""
    rows = [
        {"chosen": hh(f"question {i}", f"good answer {i}"), "rejected": hh(f"question {i}", f"bad answer {i}")}
        for i in range(8)
    ]
    rows.insert(3, {"chosen": hh("say nothing", "ok"), "rejected": hh("say nothing", "")})  # line 4
    rows.insert(
        6,
        {
            "chosen": hh("hi", "hello", "how are you", "fine"),  # line 7: turn 2 differs
            "rejected": hh("hi", "go away", "how are you", "bad"),
        },
    )
    return rows


# -------------------------------------------------------------------------------------------- gzip


def test_gzip_files_read_like_their_uncompressed_twins(tmp_path):
    import csv

    plain = load_preferences(_write(tmp_path / "d.jsonl", jsonl_bytes(ROWS)))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    (tmp_path / "d.ndjson.gz").write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    (tmp_path / "d.json.gz").write_bytes(gzip.compress(json.dumps({"data": ROWS}).encode()))
    with open(tmp_path / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress((tmp_path / "d.csv").read_bytes()))
    for name in ("d.jsonl.gz", "d.ndjson.gz", "d.json.gz", "d.csv.gz"):
        got = load_preferences(tmp_path / name)
        assert [as_tuple(p) for p in got] == [as_tuple(p) for p in plain], name
    # a compressed file under a plain name (the download dropped the .gz) is still read
    (tmp_path / "renamed.jsonl").write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    assert [as_tuple(p) for p in load_preferences(tmp_path / "renamed.jsonl")] == [as_tuple(p) for p in plain]


def test_gzip_line_numbers_count_decompressed_lines(tmp_path):
    path = _write(tmp_path / "d.jsonl.gz", gzip.compress(jsonl_bytes([ROWS[0], "", ROWS[1], {"chosen": "x"}])))
    pairs = []
    with pytest.raises(PreferenceDataError) as err:
        pairs.extend(iter_preferences(path))
    assert str(err.value).splitlines()[0] == f"{path}:4: field 'rejected': missing"
    assert [p.origin for p in pairs] == [f"{path}:1", f"{path}:3"]


def test_corrupt_gzip_is_a_named_file_error_in_either_policy(tmp_path):
    rows = [{**ROWS[0], "chosen": f"answer number {i}"} for i in range(400)]
    whole = gzip.compress(jsonl_bytes(rows))
    truncated = _write(tmp_path / "cut.jsonl.gz", whole[: len(whole) // 2])
    not_gzip = _write(tmp_path / "plain.jsonl.gz", jsonl_bytes(ROWS))
    damaged = bytearray(whole)
    damaged[len(damaged) // 2] ^= 0xFF
    corrupt = _write(tmp_path / "bad.jsonl.gz", bytes(damaged))
    for policy in ("error", "skip"):
        with pytest.raises(PreferenceDataError, match=r"cut\.jsonl\.gz: truncated gzip stream at line (\d+)$") as err:
            load_preferences(truncated, bad_rows=policy)
        line = int(err.value.reason.rsplit(" ", 1)[1])
        assert 1 < line < 400  # the rows before the cut were read
        with pytest.raises(PreferenceDataError, match=r"plain\.jsonl\.gz: not a valid gzip file$"):
            load_preferences(not_gzip, bad_rows=policy)
        with pytest.raises(PreferenceDataError, match=r"bad\.jsonl\.gz: (corrupt|truncated) gzip stream at line \d+"):
            load_preferences(corrupt, bad_rows=policy)


def test_unknown_and_missing_gzip_names(tmp_path):
    _write(tmp_path / "d.parquet.gz", b"x")
    with pytest.raises(PreferenceDataError, match=r"d\.parquet\.gz: unknown file type '\.gz'; expected .*\.jsonl\.gz"):
        load_preferences(tmp_path / "d.parquet.gz")
    with pytest.raises(PreferenceDataError, match=r"gone\.jsonl\.gz: no such file$"):
        load_preferences(tmp_path / "gone.jsonl.gz")


# ------------------------------------------------------------------------------- save_to_disk dirs


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    ).save_to_disk(str(tmp_path / "dict"))
    expected = [as_tuple(p) for p in load_preferences(_write(tmp_path / "d.jsonl", jsonl_bytes(ROWS)))]
    single = load_preferences(tmp_path / "single")
    assert [as_tuple(p) for p in single] == expected
    assert single[1].origin == f"{tmp_path / 'single'}:row 2"
    assert [as_tuple(p) for p in load_preferences(tmp_path / "dict")] == expected[:2]  # hf_split="train"
    assert [as_tuple(p) for p in load_preferences(tmp_path / "dict", hf_split="test")] == expected[2:]
    with pytest.raises(PreferenceDataError, match=r"dict: has no split 'val' \(hf_split\); its splits: train, test"):
        load_preferences(tmp_path / "dict", hf_split="val")


def test_save_to_disk_bad_rows_are_numbered_by_row(tmp_path):
    import datasets

    rows = [ROWS[0], {**ROWS[1], "margin": None}, {**ROWS[2], "chosen": None}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(BadRowsError, match=r"saved:row 3: field 'chosen': missing \(null\)"):
        load_preferences(tmp_path / "saved")


def test_directories_that_are_not_saved_datasets_are_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    _write(tmp_path / "plain" / "d.jsonl", jsonl_bytes(ROWS))
    with pytest.raises(PreferenceDataError, match=r"plain: is a directory, but not one written by datasets"):
        load_preferences(tmp_path / "plain")
    (tmp_path / "broken").mkdir()
    _write(tmp_path / "broken" / "state.json", b"{not json")
    with pytest.raises(PreferenceDataError, match=r"broken: cannot read as a datasets save_to_disk directory"):
        load_preferences(tmp_path / "broken")


def test_directory_fingerprint_follows_every_file(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    first = data_fingerprint(tmp_path / "saved", num_pairs=0, seed=0)
    assert first == data_fingerprint(str(tmp_path / "saved"), num_pairs=5, seed=1)
    assert first != data_fingerprint(tmp_path / "saved", num_pairs=0, seed=0, hf_split="test")
    extra = _write(tmp_path / "saved" / "notes.txt", b"a")
    second = data_fingerprint(tmp_path / "saved", num_pairs=0, seed=0)
    assert second != first
    extra.write_bytes(b"b")  # same names and sizes, other bytes
    assert data_fingerprint(tmp_path / "saved", num_pairs=0, seed=0) not in (first, second)
    gz = _write(tmp_path / "d.jsonl.gz", gzip.compress(jsonl_bytes(ROWS)))
    assert len(data_fingerprint(gz, num_pairs=0, seed=0)) == 64


# ---------------------------------------------------------------------------- HH, as it is shipped


def test_public_hh_file_reports_its_one_bad_row_and_keeps_the_empty_response(tmp_path):
    path = _write(tmp_path / "train.jsonl.gz", gzip.compress(jsonl_bytes(hh_public_rows())))
    with pytest.raises(BadRowsError) as err:
        load_preferences(path)
    assert err.value.total == 1
    assert str(err.value).startswith(
        f"{path}:7: field 'rejected': differs from 'chosen' before the final assistant turn: after the 1 turns they "
        "share (the prompt) it has 3 turns (assistant, user, assistant), not one final assistant turn"
    )
    skipped = []
    pairs = load_preferences(path, bad_rows="skip", skipped=skipped)
    assert len(pairs) == 9
    empty = next(p for p in pairs if p.origin == f"{path}:4")
    assert (empty.prompt, empty.chosen, empty.rejected) == ([user("say nothing")], "ok", "")
    assert [(s["origin"], s["field"]) for s in skipped] == [(f"{path}:7", "rejected")]
    assert skipped[0]["row"] == hh_public_rows()[6]


def test_lcp_prompt_for_conversations(tmp_path):
    """The shared leading turns are the prompt; each side must then hold exactly one assistant turn."""
    shared = [user("hi"), assistant("hello"), user("and?")]
    [pair] = load_preferences(
        _write(
            tmp_path / "ok.jsonl",
            jsonl_bytes([{"chosen": [*shared, assistant("yes")], "rejected": [*shared, assistant("no")]}]),
        )
    )
    assert (pair.prompt, pair.chosen, pair.rejected) == (shared, "yes", "no")
    longer = {
        "chosen": [*shared, assistant("yes")],
        "rejected": [*shared, assistant("yes"), user("more"), assistant("no")],
    }
    with pytest.raises(
        BadRowsError,
        match=r":1: field 'rejected': .*after the 4 turns they share \(the prompt\) "
        r"it has 2 turns \(user, assistant\)",
    ) as err:
        load_preferences(_write(tmp_path / "long.jsonl", jsonl_bytes([longer, ROWS[0]])))
    assert err.value.total == 1
    shorter = {
        "chosen": [*shared, assistant("yes"), user("more"), assistant("x")],
        "rejected": [*shared, assistant("yes")],
    }
    with pytest.raises(BadRowsError, match=r"field 'chosen': .*it has 2 turns"):
        load_preferences(_write(tmp_path / "short.jsonl", jsonl_bytes([shorter, ROWS[0]])))


# ------------------------------------------------------------------------------------- bad rows


def mixed_file(tmp_path):
    """Good rows at lines 1, 4, 9; bad rows at 2, 3, 5, 7, 8; a repeat at 6 and an identical pair at 10."""
    lines = [
        ROWS[0],
        '{"prompt": "q", "chosen": ',  # 2: not JSON
        {"prompt": "q", "chosen": "a"},  # 3: rejected missing
        ROWS[1],
        {"prompt": "q", "chosen": 5, "rejected": "b"},  # 5: a number for text
        ROWS[0],  # 6: a repeat of line 1
        ["q", "a", "b"],  # 7: not an object
        {**ROWS[2], "margin": "big"},  # 8
        ROWS[2],
        {"prompt": "q", "chosen": "same", "rejected": "same"},  # 10: identical
    ]
    return _write(tmp_path / "mixed.jsonl", jsonl_bytes(lines))


def test_error_policy_reports_every_bad_row_in_one_run(tmp_path, capsys):
    path = mixed_file(tmp_path)
    with pytest.raises(BadRowsError) as err:
        load_preferences(path)
    lines = str(err.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:5]] == [f"{path}:{n}" for n in (2, 3, 5, 7, 8)]
    assert lines[0].startswith(f"{path}:2: invalid JSON: ")
    assert lines[1] == f"{path}:3: field 'rejected': missing"
    assert (
        lines[2] == f"{path}:5: field 'chosen': expected text or a list of {{role, content}} messages, got a number (5)"
    )
    assert lines[5] == "5 bad rows in all; " + SKIP_HINT
    assert (err.value.line, err.value.field, err.value.total) == (2, None, 5)
    assert "skipped" not in capsys.readouterr().err  # the run failed: no skip counts


def test_error_policy_lists_ten_more_and_the_total(tmp_path):
    path = _write(tmp_path / "d.jsonl", jsonl_bytes([ROWS[0]] + [{"chosen": f"c{i}"} for i in range(25)]))
    with pytest.raises(BadRowsError) as err:
        load_preferences(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 12
    assert [line.split(": ", 1)[0] for line in lines[:11]] == [f"{path}:{n}" for n in range(2, 13)]
    assert lines[11].startswith("... and 14 more bad rows (25 in all); pass --bad_rows skip")


def test_error_policy_hands_out_no_pair_after_the_first_bad_row(tmp_path):
    path = _write(tmp_path / "d.jsonl", jsonl_bytes([ROWS[0], {"chosen": "x"}, ROWS[1], ROWS[2]]))
    pairs = []
    with pytest.raises(BadRowsError):
        pairs.extend(iter_preferences(path))
    assert [p.origin for p in pairs] == [f"{path}:1"]


def test_skip_policy_records_every_row_left_out(tmp_path, capsys):
    path = mixed_file(tmp_path)
    skipped = []
    pairs = load_preferences(path, bad_rows="skip", skipped=skipped)
    assert [p.origin for p in pairs] == [f"{path}:{n}" for n in (1, 4, 9)]
    assert [(s["origin"], s["field"]) for s in skipped] == [
        (f"{path}:2", None),
        (f"{path}:3", "rejected"),
        (f"{path}:5", "chosen"),
        (f"{path}:6", None),
        (f"{path}:7", None),
        (f"{path}:8", "margin"),
        (f"{path}:10", None),
    ]
    by_origin = {s["origin"]: s for s in skipped}
    assert by_origin[f"{path}:2"]["row"] == '{"prompt": "q", "chosen": '  # the raw line, as text
    assert by_origin[f"{path}:3"]["row"] == {"prompt": "q", "chosen": "a"}
    assert by_origin[f"{path}:6"]["reason"] == "repeats the pair at line 1"
    assert by_origin[f"{path}:10"]["reason"] == "chosen and rejected responses are identical"
    assert by_origin[f"{path}:7"]["reason"].startswith("expected a JSON object")
    json.dumps(skipped)  # the caller writes them as JSON Lines
    err = capsys.readouterr().err
    assert f"sarm: {path}: skipped 5 bad rows (lines/rows 2, 3, 5, 7, 8); the first: {path}:2: invalid JSON: " in err
    assert "skipped 1 rows repeating an earlier pair (lines/rows 6)" in err
    assert "skipped 1 rows whose chosen and rejected responses are identical (lines/rows 10)" in err


def test_skip_policy_covers_unreadable_lines_and_csv_records(tmp_path):
    bad_line = b'{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n'
    path = _write(tmp_path / "d.jsonl", jsonl_bytes([ROWS[0]]) + bad_line + jsonl_bytes([ROWS[1]]))
    skipped = []
    assert len(load_preferences(path, bad_rows="skip", skipped=skipped)) == 2
    assert skipped[0]["origin"] == f"{path}:2" and "UTF-8" in skipped[0]["reason"]
    assert skipped[0]["row"] == '{"prompt": "q\ufffd", "chosen": "a", "rejected": "b"}\n'
    csv_path = _write(tmp_path / "d.csv", b'prompt,chosen,rejected\nq,a,b\nq2,only two\n"q3\n\xff",c,d\nq4,e,f\n')
    skipped = []
    pairs = load_preferences(csv_path, bad_rows="skip", skipped=skipped)
    assert [p.chosen for p in pairs] == ["a", "e"]
    assert [(s["origin"], s["reason"][:13]) for s in skipped] == [
        (f"{csv_path}:row 2", "has 2 cells, "),
        (f"{csv_path}:5", "not valid UTF"),  # line 5: the \xff line
    ]


def test_source_level_problems_are_never_skipped(tmp_path):
    only_bad = _write(tmp_path / "bad.jsonl", jsonl_bytes([{"chosen": "a"}, {"chosen": "b"}]))
    with pytest.raises(PreferenceDataError, match=r"bad\.jsonl: holds no preference pairs \(2 rows were skipped\)"):
        load_preferences(only_bad, bad_rows="skip")
    (tmp_path / "d.json").write_text('[{"prompt": "q", "chosen": "a", ')
    with pytest.raises(PreferenceDataError, match=r"d\.json:1: invalid JSON"):
        load_preferences(tmp_path / "d.json", bad_rows="skip")
    with pytest.raises(PreferenceDataError, match=r"nowhere\.jsonl: no such file"):
        load_preferences(tmp_path / "nowhere.jsonl", bad_rows="skip")
    with pytest.raises(SarmInputError, match=r"bad_rows = 'ignore': expected one of 'error', 'skip'"):
        load_preferences(only_bad, bad_rows="ignore")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
