"""Preference loading: every file format and row layout gives the same pairs; bad rows are named."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from sarm.cache.settings import data_fingerprint
from sarm.data.preference import SKIP_HINT, load_preferences
from sarm.data.rows import PreferencePair
from sarm.data.splits import split_by_prompt
from sarm.errors import PreferenceDataError, SarmInputError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


ROWS = [
    {"prompt": "what is the capital of france", "chosen": "paris", "rejected": "london", "margin": 1.5, "id": "a"},
    {"prompt": "hello how are you", "chosen": "fine thank you", "rejected": "go away", "margin": 0.0, "id": "b"},
    {"prompt": "what is the capital of france", "chosen": "paris, of course", "rejected": "rome", "id": "c"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return path


def as_tuple(pair: PreferencePair):
    """Everything but the origin, which names the file."""
    return (pair.prompt, pair.chosen, pair.rejected, pair.margin, pair.prompt_id, pair.meta)


def load_row(tmp_path, row, name="row.jsonl"):
    [pair] = load_preferences(write_jsonl(tmp_path / name, [row]))
    return pair


# ---------------------------------------------------------------------------------------- formats


def test_every_file_format_gives_identical_pairs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    conversation_rows = [
        {"chosen": [user("q1"), assistant("a1")], "rejected": [user("q1"), assistant("b1")], "margin": 2.0, "id": "x"},
        {"chosen": [user("q2"), assistant("a2")], "rejected": [user("q2"), assistant("b2")], "margin": 0.5, "id": "y"},
    ]
    for rows in (ROWS, conversation_rows):
        jsonl = load_preferences(write_jsonl(tmp_path / "d.jsonl", rows))
        (tmp_path / "d.json").write_text(json.dumps(rows))
        (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
        write_csv(tmp_path / "d.csv", rows)

        expected = [as_tuple(p) for p in jsonl]
        assert len(expected) == len(rows)
        for name in ("d.json", "wrapped.json", "d.parquet", "d.csv"):
            got = [as_tuple(p) for p in load_preferences(tmp_path / name)]
            assert got == expected, name


def test_origins_name_file_and_line_or_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")  # a blank line 2
    assert [p.origin for p in load_preferences(path)] == [f"{path}:1", f"{path}:3"]
    (tmp_path / "d.json").write_text(json.dumps(ROWS[:2]))
    assert [p.origin for p in load_preferences(tmp_path / "d.json")] == [
        f"{tmp_path / 'd.json'}:row 1",
        f"{tmp_path / 'd.json'}:row 2",
    ]


def test_json_lines_file_named_json_is_read_line_by_line(tmp_path):
    path = write_jsonl(tmp_path / "d.json", ROWS)
    assert [p.chosen for p in load_preferences(path)] == [r["chosen"] for r in ROWS]


# ------------------------------------------------------------------------------------ row layouts


def test_explicit_and_implicit_prompt_agree(tmp_path):
    explicit = {"prompt": [user("hi")], "chosen": [assistant("hello")], "rejected": [assistant("go away")]}
    implicit = {"chosen": [user("hi"), assistant("hello")], "rejected": [user("hi"), assistant("go away")]}
    a, b = load_row(tmp_path, explicit), load_row(tmp_path, implicit)
    assert (a.prompt, a.chosen, a.rejected) == (b.prompt, b.chosen, b.rejected) == ([user("hi")], "hello", "go away")
    assert a.prompt_id == b.prompt_id  # hashed from the same prompt messages


def test_conversation_split_agrees_with_trl(tmp_path):
    from trl.data_utils import maybe_extract_prompt

    shared = [user("q"), assistant("a"), user("q2")]
    rows = [
        {"chosen": [*shared, assistant("yes")], "rejected": [*shared, assistant("no")]},
        {"chosen": [user("hi"), assistant("x")], "rejected": [user("hi"), assistant("y")]},
        {"prompt": shared, "chosen": [assistant("yes")], "rejected": [assistant("no")]},
    ]
    for row in rows:
        ours, theirs = load_row(tmp_path, row), maybe_extract_prompt(row)
        assert ours.prompt == theirs["prompt"]
        assert [assistant(ours.chosen)] == theirs["chosen"] and [assistant(ours.rejected)] == theirs["rejected"]


def test_implicit_multi_turn_prompt_keeps_all_shared_turns(tmp_path):
    shared = [{"role": "system", "content": "be nice"}, user("q"), assistant("a"), user("q2")]
    pair = load_row(tmp_path, {"chosen": [*shared, assistant("yes")], "rejected": [*shared, assistant("no")]})
    assert (pair.prompt, pair.chosen, pair.rejected) == (shared, "yes", "no")


def test_plain_text_implicit_prompt_is_cut_at_a_word_boundary(tmp_path):
    implicit = load_row(tmp_path, {"chosen": "the sky is blue", "rejected": "the sky is black"})
    explicit = load_row(tmp_path, {"prompt": "the sky is", "chosen": "blue", "rejected": "black"})
    assert (implicit.prompt, implicit.chosen, implicit.rejected) == ([user("the sky is")], "blue", "black")
    assert as_tuple(implicit) == as_tuple(explicit)


def test_conversation_plain_text_and_hh_transcript_agree(tmp_path):
    layouts = [
        {"prompt": [user("how are you")], "chosen": [assistant("fine")], "rejected": [assistant("bad")]},
        {"prompt": "how are you", "chosen": "fine", "rejected": "bad"},
        {"chosen": "\n\nHuman: how are you\n\nAssistant: fine", "rejected": "\n\nHuman: how are you\n\nAssistant: bad"},
        {"prompt": "\n\nHuman: how are you\n\nAssistant:", "chosen": " fine", "rejected": " bad"},
    ]
    pairs = [load_row(tmp_path, row) for row in layouts]
    for pair in pairs:
        assert (pair.prompt, pair.chosen, pair.rejected) == ([user("how are you")], "fine", "bad")
    assert len({p.prompt_id for p in pairs}) == 1


def test_multi_turn_hh_transcript(tmp_path):
    history = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: what is 2+2?\n\nAssistant:"
    pair = load_row(tmp_path, {"chosen": history + " 4", "rejected": history + " 5"})
    assert pair.prompt == [user("hi"), assistant("hello"), user("what is 2+2?")]
    assert (pair.chosen, pair.rejected) == ("4", "5")


def test_margin_prompt_id_and_meta(tmp_path):
    pair = load_row(
        tmp_path,
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 3, "question_id": 7, "id": 12, "subset": "x"},
    )
    assert pair.margin == 3.0 and isinstance(pair.margin, float)
    assert pair.prompt_id == "7"
    assert pair.meta == {"id": 12, "subset": "x"}
    assert load_row(tmp_path, {"prompt": "q", "chosen": "a", "rejected": "b"}).margin is None


def test_planted_style_rows(tmp_path):
    rows = [
        {
            "prompt": [user("write a note")],
            "chosen": [assistant("Here it is. Kind regards")],
            "rejected": [assistant("Here it is.")],
            "prompt_id": f"planted-{i:06d}",
            "attribute": "politeness",
            "chosen_signoff": True,
            "rejected_signoff": False,
        }
        for i in range(2)
    ]
    pairs = load_preferences(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [p.prompt_id for p in pairs] == ["planted-000000", "planted-000001"]
    assert pairs[0].meta == {"attribute": "politeness", "chosen_signoff": True, "rejected_signoff": False}
    assert pairs[0].chosen == "Here it is. Kind regards"


def test_builtin_planted_goes_through_the_row_parser(monkeypatch):
    import sys
    import types

    rows = [{"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")], "prompt_id": "p-1"}]
    calls = []
    fake = types.ModuleType("sarm.data.planted")
    fake.generate_planted_pairs = lambda num_pairs=2000, seed=0: calls.append((num_pairs, seed)) or rows
    monkeypatch.setitem(sys.modules, "sarm.data.planted", fake)
    [pair] = load_preferences("builtin:planted", num_pairs=5, seed=3)
    assert calls == [(5, 3)]
    assert (pair.prompt, pair.chosen, pair.origin) == ([user("q")], "a", "builtin:planted:row 1")
    with pytest.raises(PreferenceDataError, match="unknown builtin"):
        load_preferences("builtin:nope")


def test_hub_name_uses_load_dataset_and_reports_offline(monkeypatch):
    import datasets

    def fake_load(name, split):
        assert (name, split) == ("org/prefs", "test")
        return datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    [pair] = load_preferences("org/prefs", hf_split="test")
    assert (pair.prompt, pair.chosen, pair.rejected) == ([user("q")], "a", "b")

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(PreferenceDataError, match="no such file.*hub.*no network"):
        load_preferences("org/prefs")


# ----------------------------------------------------------------------------------------- errors


def test_third_line_missing_rejected_is_named(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [ROWS[0], ROWS[1], {"prompt": "q", "chosen": "a"}]
    write_jsonl(path, rows)
    with pytest.raises(PreferenceDataError) as err:
        load_preferences(path)
    first, *rest = str(err.value).splitlines()
    assert first == f"{path}:3: field 'rejected': missing"
    assert rest == [f"1 bad row in all; {SKIP_HINT}"]
    assert (err.value.line, err.value.field, err.value.total) == (3, "rejected", 1)


@pytest.mark.parametrize(
    "bad_line, field, reason",
    [
        ('{"prompt": "q", "chosen": "a", ', None, "invalid JSON"),
        ('["q", "a", "b"]', None, "expected a JSON object"),
        ('{"prompt": "q", "chosen": 5, "rejected": "b"}', "chosen", "got a number"),
        ('{"prompt": 5, "chosen": "a", "rejected": "b"}', "prompt", "got a number"),
        ('{"chosen": [{"content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}', "chosen", "'role'"),
        ('{"prompt": "q", "chosen": [{"role": "assistant", "content": 1}], "rejected": "b"}', "chosen", "must be text"),
        (
            '{"chosen": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}],'
            ' "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}',
            "chosen",
            "final turn is from 'user'",
        ),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}', "margin", "must be a number"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": true}', "margin", "must be a number"),
        ('{"chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}', "rejected", "both must be"),
        (
            '{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],'
            ' "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}',
            "rejected",
            "differs from 'chosen' before the final assistant turn",
        ),
    ],
)
def test_invalid_rows_name_line_and_field(tmp_path, bad_line, field, reason):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + bad_line + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(PreferenceDataError) as err:
        load_preferences(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}:2: ")


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(PreferenceDataError, match="UTF-8") as err:
        load_preferences(path)
    assert err.value.line == 2
    csv_path = tmp_path / "data.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\nq,a,b\nq,a\xff,b\n")
    with pytest.raises(PreferenceDataError, match="UTF-8") as err:
        load_preferences(csv_path)
    assert err.value.line == 3


def test_errors_in_row_numbered_formats_say_row(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([ROWS[0], {"prompt": "q", "chosen": [], "rejected": "b"}]))
    with pytest.raises(PreferenceDataError, match=r"d\.json:row 2: field 'chosen': empty conversation"):
        load_preferences(tmp_path / "d.json")
    write_csv(tmp_path / "d.csv", [ROWS[0], {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "x"}])
    with pytest.raises(PreferenceDataError, match=r"d\.csv:row 2: field 'margin'"):
        load_preferences(tmp_path / "d.csv")


def test_bad_sources_are_named(tmp_path):
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(PreferenceDataError, match=r"d\.txt: unknown file type"):
        load_preferences(tmp_path / "d.txt")
    with pytest.raises(PreferenceDataError, match=r"missing\.jsonl: no such file"):
        load_preferences(tmp_path / "missing.jsonl")
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(PreferenceDataError, match=r"d\.parquet: cannot read as Parquet"):
        load_preferences(tmp_path / "d.parquet")


# ----------------------------------------------------------------------------------------- splits


def grouped_pairs(sizes):
    """Pairs under prompts p0, p1, ..., prompt i having sizes[i] pairs, interleaved."""
    pairs = []
    for round_ in range(max(sizes)):
        for i, size in enumerate(sizes):
            if round_ < size:
                pairs.append(PreferencePair([user(f"q{i}")], f"a{round_}", "b", prompt_id=f"p{i}"))
    return pairs


def test_split_keeps_prompts_together_and_covers_every_pair_once():
    pairs = grouped_pairs([1, 2, 3, 4] * 25)
    splits = split_by_prompt(pairs, (0.8, 0.1, 0.1), seed=0)
    assert set(splits) == {"train", "val", "test"}
    members = [id(p) for split in splits.values() for p in split]
    assert sorted(members) == sorted(id(p) for p in pairs)  # the same objects, each exactly once
    where = {}
    for name, split in splits.items():
        for pair in split:
            assert where.setdefault(pair.prompt_id, name) == name
        index = [pairs.index(p) for p in split]
        assert index == sorted(index)  # original order
    counts = {name: len(split) for name, split in splits.items()}
    assert abs(counts["train"] - 200) <= 4 and abs(counts["val"] - 25) <= 4 and abs(counts["test"] - 25) <= 4


def test_split_is_deterministic_seeded_and_order_free():
    pairs = grouped_pairs([3] * 40)
    ids = lambda splits: {name: sorted(p.prompt_id for p in s) for name, s in splits.items()}  # noqa: E731
    assert ids(split_by_prompt(pairs, seed=1)) == ids(split_by_prompt(pairs, seed=1))
    assert ids(split_by_prompt(pairs, seed=1)) != ids(split_by_prompt(pairs, seed=2))
    assert ids(split_by_prompt(pairs[::-1], seed=1)) == ids(split_by_prompt(pairs, seed=1))


def test_split_fraction_edge_cases():
    pairs = grouped_pairs([1] * 10)
    counts = lambda s: Counter({k: len(v) for k, v in s.items()})  # noqa: E731
    assert counts(split_by_prompt(pairs, (0.8, 0.1, 0.1))) == Counter(train=8, val=1, test=1)
    assert counts(split_by_prompt(pairs, (1.0, 0.0, 0.0))) == Counter(train=10, val=0, test=0)
    assert counts(split_by_prompt([], (0.8, 0.1, 0.1))) == Counter(train=0, val=0, test=0)
    with pytest.raises(SarmInputError, match="sum"):
        split_by_prompt(pairs, (0.5, 0.1, 0.1))


# ----------------------------------------------------------------------------------- fingerprints


def test_fingerprint_follows_file_bytes_and_builtin_params(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    first = data_fingerprint(path, num_pairs=10, seed=0)
    assert first == data_fingerprint(str(path), num_pairs=99, seed=5)  # params don't matter for files
    write_jsonl(path, ROWS[:2])
    assert data_fingerprint(path, num_pairs=10, seed=0) != first
    planted = data_fingerprint("builtin:planted", num_pairs=10, seed=0)
    assert planted == data_fingerprint("builtin:planted", num_pairs=10, seed=0)
    assert planted != data_fingerprint("builtin:planted", num_pairs=10, seed=1)
    assert planted != data_fingerprint("builtin:planted", num_pairs=11, seed=0)
    assert len(planted) == 64


def test_empty_prompt_and_empty_responses_are_kept(tmp_path):
    """An empty response is a (bad) response, to be scored; a CSV's empty response cell is one too."""
    pair = load_row(tmp_path, {"prompt": [], "chosen": [assistant("a")], "rejected": [assistant("b")]})
    assert (pair.prompt, pair.chosen, pair.rejected) == ([], "a", "b")
    write_csv(tmp_path / "d.csv", [{"prompt": "q", "chosen": "", "rejected": "b"}])
    [pair] = load_preferences(tmp_path / "d.csv")
    assert (pair.prompt, pair.chosen, pair.rejected) == ([user("q")], "", "b")
    for row, expected in [
        ({"prompt": "q", "chosen": "a", "rejected": ""}, ([user("q")], "a", "")),
        ({"prompt": "q", "chosen": "   ", "rejected": "b"}, ([user("q")], "   ", "b")),
        ({"chosen": [user("q"), assistant("")], "rejected": [user("q"), assistant("b")]}, ([user("q")], "", "b")),
        # an HH transcript whose final "Assistant:" turn is empty: the chosen side of some public rows
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: yes", "rejected": "\n\nHuman: q\n\nAssistant:"},
            ([user("q")], "yes", ""),
        ),
    ]:
        pair = load_row(tmp_path, row)
        assert (pair.prompt, pair.chosen, pair.rejected) == expected, row


def test_identical_and_repeated_pairs_are_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    rows = [ROWS[0], {"prompt": "q", "chosen": "same", "rejected": "same"}, ROWS[1], ROWS[0]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_preferences(path)
    assert [p.origin for p in pairs] == [f"{path}:1", f"{path}:3"]
    err = capsys.readouterr().err
    assert "skipped 1 rows whose chosen and rejected responses are identical (lines/rows 2)" in err
    assert "skipped 1 rows repeating an earlier pair (lines/rows 4)" in err


@pytest.mark.parametrize("content", ["", "\n\n", json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n"])
def test_a_source_without_pairs_is_an_error(tmp_path, content):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(PreferenceDataError, match=r"data\.jsonl: holds no preference pairs"):
        load_preferences(path)


def test_parquet_with_the_wrong_schema_names_row_and_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["q"], "answer": ["a"], "rejected": ["b"]}), tmp_path / "d.parquet")
    with pytest.raises(PreferenceDataError, match=r"d\.parquet:row 1: field 'chosen': missing"):
        load_preferences(tmp_path / "d.parquet")


def test_the_planted_fingerprint_covers_every_file_of_the_generator_package(tmp_path, monkeypatch):
    import sys

    from sarm.cache import settings

    package = tmp_path / "fakeplanted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "templates.py").write_text("GREETINGS = ('hello',)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = settings.package_digest("fakeplanted")
    (package / "templates.py").write_text("GREETINGS = ('hello', 'hi')\n")  # a template edited, no code changed
    assert settings.package_digest("fakeplanted") != before
    sys.modules.pop("fakeplanted", None)

    fingerprints = set()
    for digest in ("a", "b"):
        monkeypatch.setattr(settings, "package_digest", lambda name, digest=digest: digest)
        fingerprints.add(data_fingerprint("builtin:planted", num_pairs=10, seed=0))
    assert len(fingerprints) == 2  # the package's digest is part of the data's fingerprint
