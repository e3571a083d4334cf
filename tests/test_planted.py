"""The planted generator: seeded, balanced, well-formed pairs whose deciding attribute is the only decider."""

import re
from collections import Counter, defaultdict

import pytest

from sarm.data.planted import ATTRIBUTES, DISTRACTORS, generate_planted_pairs
from sarm.data.planted.templates import FILLERS, HOWTO, NEUTRAL_LEADS, PROMPT_OPENERS, SIGNOFFS


@pytest.fixture(scope="module")
def rows():
    return generate_planted_pairs(3000, seed=0)


def text(row, side):
    return row[side][0]["content"]


def by_attribute(rows, attribute):
    return [r for r in rows if r["attribute"] == attribute]


def body(row, side):
    """The response without its distractor sentences (they are appended last, filler first)."""
    content = text(row, side)
    for distractor, sentences in (("signoff", SIGNOFFS), ("verbose", FILLERS)):
        if row[f"{side}_{distractor}"]:
            ending = next(s for s in sentences if content.endswith(s))
            content = content[: -len(ending)].rstrip()
    return content


def differing_words(a, b):
    """The words of ``a`` and ``b`` left once their common first and last words are removed."""
    a, b = a.split(), b.split()
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return a[start : len(a) - end], b[start : len(b) - end]


def howto_item(row):
    """The how-to entry whose question the row's prompt asks (after any opener such as "Hey! ")."""
    prompt = row["prompt"][-1]["content"]
    opener = max((o for o in PROMPT_OPENERS if prompt.startswith(o)), key=len)
    return next(item for item in HOWTO if prompt[len(opener) :] in item[1])


def test_same_seed_same_rows_other_seed_other_rows():
    assert generate_planted_pairs(300, seed=7) == generate_planted_pairs(300, seed=7)
    assert generate_planted_pairs(300, seed=7) != generate_planted_pairs(300, seed=8)


def test_requested_number_of_rows_for_any_size():
    for n in (0, 1, 5, 6, 7, 301):
        assert len(generate_planted_pairs(n, seed=0)) == n


def test_declares_at_least_six_attributes_and_two_distractors():
    assert len(ATTRIBUTES) >= 6 and len(set(ATTRIBUTES)) == len(ATTRIBUTES)
    assert len(DISTRACTORS) >= 2 and not set(DISTRACTORS) & set(ATTRIBUTES)


def test_attributes_are_balanced_with_remainder_spread():
    n = len(ATTRIBUTES) * 100 + 4
    counts = Counter(r["attribute"] for r in generate_planted_pairs(n, seed=1))
    assert set(counts) == set(ATTRIBUTES)
    assert sum(counts.values()) == n and max(counts.values()) - min(counts.values()) <= 1


def test_rows_are_shuffled_not_grouped_by_attribute(rows):
    first = [r["attribute"] for r in rows[:60]]
    assert len(set(first)) == len(ATTRIBUTES)


def test_every_row_is_well_formed(rows):
    flag_columns = {f"{side}_{d}" for side in ("chosen", "rejected") for d in DISTRACTORS}
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "prompt_id", "attribute"} | flag_columns
        assert [m["role"] for m in row["prompt"]][-1] == "user"
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert [m["role"] for m in row["rejected"]] == ["assistant"]
        for message in row["prompt"] + row["chosen"] + row["rejected"]:
            assert isinstance(message["content"], str) and message["content"].strip()
        assert text(row, "chosen") != text(row, "rejected")
        assert row["attribute"] in ATTRIBUTES
        assert row["prompt_id"].startswith("planted-")
        assert all(isinstance(row[c], bool) for c in flag_columns)


def test_texts_are_short(rows):
    # A 135M model on two CPU cores must embed ~2,000 pairs in minutes: words stand in for tokens.
    for row in rows:
        assert len(row["prompt"][-1]["content"].split()) <= 20
        assert len(text(row, "chosen").split()) <= 45 and len(text(row, "rejected").split()) <= 45


@pytest.mark.parametrize("distractor", DISTRACTORS)
def test_distractors_carry_no_information_about_the_preference(rows, distractor):
    chosen_rate = sum(r[f"chosen_{distractor}"] for r in rows) / len(rows)
    rejected_rate = sum(r[f"rejected_{distractor}"] for r in rows) / len(rows)
    assert abs(chosen_rate - 0.5) < 0.04 and abs(rejected_rate - 0.5) < 0.04
    for attribute in ATTRIBUTES:  # nor within any one attribute
        subset = by_attribute(rows, attribute)
        rate = sum(r[f"chosen_{distractor}"] for r in subset) / len(subset)
        assert abs(rate - 0.5) < 0.1, attribute


def test_distractor_flags_match_the_text(rows):
    for row in rows:
        for side in ("chosen", "rejected"):
            assert any(text(row, side).endswith(s) for s in SIGNOFFS) == row[f"{side}_signoff"]
            assert any(f in text(row, side) for f in FILLERS) == row[f"{side}_verbose"]


def test_verbose_responses_are_longer_on_average(rows):
    lengths = defaultdict(list)
    for row in rows:
        for side in ("chosen", "rejected"):
            lengths[row[f"{side}_verbose"]].append(len(text(row, side)))
    assert sum(lengths[True]) / len(lengths[True]) > sum(lengths[False]) / len(lengths[False]) + 15


def test_prompt_id_and_prompt_text_correspond_one_to_one(rows):
    text_of_id, id_of_text = {}, {}
    for row in rows:
        prompt = row["prompt"][-1]["content"]
        assert text_of_id.setdefault(row["prompt_id"], prompt) == prompt
        assert id_of_text.setdefault(prompt, row["prompt_id"]) == row["prompt_id"]


def test_prompts_hold_two_or_three_pairs_of_one_attribute(rows):
    groups = defaultdict(list)
    for row in rows:
        groups[row["prompt_id"]].append(row["attribute"])
    sizes = Counter(len(g) for g in groups.values())
    assert sizes[2] + sizes[3] >= 0.97 * len(groups)
    assert 2.2 < len(rows) / len(groups) < 2.8
    assert all(len(set(g)) == 1 for g in groups.values())


def test_each_attribute_has_varied_prompts_and_responses():
    rows = generate_planted_pairs(600, seed=3)
    for attribute in ATTRIBUTES:
        subset = by_attribute(rows, attribute)
        assert len({r["prompt"][-1]["content"] for r in subset}) >= 30, attribute
        assert len({text(r, "chosen") for r in subset}) >= 80, attribute
        assert len({text(r, "rejected") for r in subset}) >= 80, attribute
        # Not just the distractors: the bodies themselves vary.
        for side in ("chosen", "rejected"):
            bodies = Counter(body(r, side) for r in subset)
            assert len(bodies) >= 40 and bodies.most_common(1)[0][1] <= 0.15 * len(subset), (attribute, side)


def test_code_block_pairs_differ_by_a_fenced_python_block(rows):
    for row in by_attribute(rows, "code_block"):
        assert "```python\n" in text(row, "chosen") and "def " in text(row, "chosen")
        assert "```" not in text(row, "rejected") and "def " not in text(row, "rejected")
    for row in rows:  # and no other attribute has a fence anywhere
        if row["attribute"] != "code_block":
            assert "```" not in text(row, "chosen") + text(row, "rejected")


def test_refusal_chosen_declines_and_rejected_complies(rows):
    declines = ("can't", "won't", "not able", "decline", "refuse", "say no", "not something I can")
    for row in by_attribute(rows, "refusal"):
        assert any(d in text(row, "chosen") for d in declines)
        assert not any(d in text(row, "rejected") for d in declines)


def test_correctness_sides_differ_only_in_the_answer(rows):
    for row in by_attribute(rows, "correctness"):
        right, wrong = differing_words(body(row, "chosen"), body(row, "rejected"))
        assert 1 <= len(right) <= 2 and 1 <= len(wrong) <= 2, (right, wrong)


def test_correctness_arithmetic_is_right_on_chosen_and_wrong_on_rejected(rows):
    pattern = re.compile(r"(\d+) (plus|times) (\d+) equals (\d+)\.")
    checked = 0
    for row in by_attribute(rows, "correctness"):
        for side, is_right in (("chosen", True), ("rejected", False)):
            match = pattern.search(text(row, side))
            if match:
                a, op, b, result = match.groups()
                expected = int(a) + int(b) if op == "plus" else int(a) * int(b)
                assert (int(result) == expected) == is_right
                checked += 1
    assert checked > 100


def test_politeness_sides_carry_the_same_answer_to_the_question(rows):
    for row in by_attribute(rows, "politeness"):
        _, _, answer = howto_item(row)
        assert answer in text(row, "chosen") and answer in text(row, "rejected")


def test_on_topic_chosen_answers_the_question_and_rejected_does_not(rows):
    for row in by_attribute(rows, "on_topic"):
        _, _, answer = howto_item(row)
        assert answer in text(row, "chosen") and answer not in text(row, "rejected")


@pytest.mark.parametrize("attribute", ["correctness", "on_topic", "safety"])
def test_both_sides_share_the_same_neutral_lead_in(rows, attribute):
    openings = [lead.split("{}")[0] for lead in NEUTRAL_LEADS if lead.split("{}")[0]]
    closings = [lead.split("{}")[1] for lead in NEUTRAL_LEADS if lead.split("{}")[1]]
    for row in by_attribute(rows, attribute):
        chosen, rejected = body(row, "chosen"), body(row, "rejected")
        assert [chosen.startswith(o) for o in openings] == [rejected.startswith(o) for o in openings]
        assert [chosen.endswith(c) for c in closings] == [rejected.endswith(c) for c in closings]
