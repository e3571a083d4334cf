"""The planted generator: draws prompts, pairs and distractors from ``templates`` with one seeded RNG."""

from __future__ import annotations

import random

from sarm.data.planted.templates import (
    CAPITAL_QUESTIONS,
    CAPITALS,
    CODE_REQUESTS,
    CODE_TASKS,
    COMPLIANCES,
    COUNT_FACTS,
    DISTRACTOR_TEXTS,
    HARMFUL_REQUESTS,
    HOWTO,
    ITEMS,
    NEUTRAL_LEADS,
    OFF_TOPIC_REMARKS,
    PEOPLE,
    PLACES,
    POLITE,
    PRODUCT_QUESTIONS,
    PROMPT_OPENERS,
    PROSE_ONLY,
    REFUSALS,
    RUDE,
    SAFETY_ADVICE,
    SUM_QUESTIONS,
    WITH_CODE,
    WORD_FACTS,
    WRONG_NUMBERS,
)

ATTRIBUTES = ("refusal", "correctness", "politeness", "on_topic", "code_block", "safety")

DISTRACTORS = ("verbose", "signoff")  # applied in this order: filler sentence, then sign-off


def _capital_fact(rng: random.Random) -> tuple[str, str, str, list[str]]:
    country, capital = rng.choice(CAPITALS)
    others = [c for _, c in CAPITALS if c != capital]
    return rng.choice(CAPITAL_QUESTIONS).format(country), f"The capital of {country} is {{}}.", capital, others


def _sum_fact(rng: random.Random) -> tuple[str, str, str, list[str]]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    # Far off, not off-by-one: the error should be plain even to a small model.
    wrongs = [str(a + b + d) for d in range(9, 60)]
    return rng.choice(SUM_QUESTIONS).format(a, b), f"{a} plus {b} equals {{}}.", str(a + b), wrongs


def _product_fact(rng: random.Random) -> tuple[str, str, str, list[str]]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    wrongs = [str(a * b + d) for d in range(11, 80)]
    return rng.choice(PRODUCT_QUESTIONS).format(a, b), f"{a} times {b} equals {{}}.", str(a * b), wrongs


def _count_fact(rng: random.Random) -> tuple[str, str, str, list[str]]:
    question, statement, n = rng.choice(COUNT_FACTS)
    wrongs = [str(w) for w in WRONG_NUMBERS if abs(w - n) > n // 2 + 2]
    return question, statement, str(n), wrongs


def _word_fact(rng: random.Random) -> tuple[str, str, str, list[str]]:
    question, statement, right, wrongs = rng.choice(WORD_FACTS)
    return question, statement, right, list(wrongs)


FACT_KINDS = (_capital_fact, _sum_fact, _product_fact, _count_fact, _word_fact)

# ----------------------------------------------------------------------------- builders

# Each builder draws one question and k (chosen, rejected) bodies for it, k <= 12 (template counts).
Pairs = list[tuple[str, str]]


def _refusal(rng: random.Random, k: int) -> tuple[str, Pairs]:
    request, act = rng.choice(HARMFUL_REQUESTS)
    slots = dict(person=rng.choice(PEOPLE), item=rng.choice(ITEMS), place=rng.choice(PLACES))
    act = act.format(**slots)
    refusals, compliances = rng.sample(REFUSALS, k), rng.sample(COMPLIANCES, k)
    pairs = [
        (refusal.format(act=act), compliance.format(act=act)) for refusal, compliance in zip(refusals, compliances)
    ]
    return request.format(**slots), pairs


def _correctness(rng: random.Random, k: int) -> tuple[str, Pairs]:
    question, statement, right, wrongs = rng.choice(FACT_KINDS)(rng)
    pairs = []
    for lead in rng.sample(NEUTRAL_LEADS, k):
        pairs.append((lead.format(statement.format(right)), lead.format(statement.format(rng.choice(wrongs)))))
    return question, pairs


def _politeness(rng: random.Random, k: int) -> tuple[str, Pairs]:
    _, questions, answer = rng.choice(HOWTO)
    pairs = [
        (polite.format(answer), rude.format(answer)) for polite, rude in zip(rng.sample(POLITE, k), rng.sample(RUDE, k))
    ]
    return rng.choice(questions), pairs


def _on_topic(rng: random.Random, k: int) -> tuple[str, Pairs]:
    area, questions, answer = rng.choice(HOWTO)
    other_answers = [a for other_area, _, a in HOWTO if other_area != area]
    pairs = []
    for lead in rng.sample(NEUTRAL_LEADS, k):
        # Mostly trivia; sometimes a real answer to another area's question, so that "sounds like
        # an answer" is not enough and relevance to the question has to be read.
        unrelated = rng.choice(OFF_TOPIC_REMARKS) if rng.random() < 2 / 3 else rng.choice(other_answers)
        pairs.append((lead.format(answer), lead.format(unrelated)))
    return rng.choice(questions), pairs


def _code_block(rng: random.Random, k: int) -> tuple[str, Pairs]:
    task, task_inf, code, prose = rng.choice(CODE_TASKS)
    slots = dict(task=task, task_inf=task_inf, code=code, prose=prose)
    # The same template index on both sides: same lead-in, code versus words.
    pairs = [
        (WITH_CODE[i].format(**slots), PROSE_ONLY[i].format(**slots)) for i in rng.sample(range(len(WITH_CODE)), k)
    ]
    return rng.choice(CODE_REQUESTS).format(**slots), pairs


def _safety(rng: random.Random, k: int) -> tuple[str, Pairs]:
    questions, safe, dangerous = rng.choice(SAFETY_ADVICE)
    pairs = [
        (lead.format(rng.choice(safe)), lead.format(rng.choice(dangerous))) for lead in rng.sample(NEUTRAL_LEADS, k)
    ]
    return rng.choice(questions), pairs


BUILDERS = {
    "refusal": _refusal,
    "correctness": _correctness,
    "politeness": _politeness,
    "on_topic": _on_topic,
    "code_block": _code_block,
    "safety": _safety,
}


# ----------------------------------------------------------------------------- generator
def _add_distractors(text: str, flags: dict[str, bool], rng: random.Random) -> str:
    parts = [text] + [rng.choice(DISTRACTOR_TEXTS[d]) for d in DISTRACTORS if flags[d]]
    return ("\n" if "```" in text else " ").join(parts)  # keep a code fence on its own line


def _draw_prompt(rng: random.Random, attribute: str, k: int, seen: dict[str, str]) -> tuple[str, Pairs]:
    """A question not used yet, when one can be found; else the last draw (it joins that prompt's group)."""
    for _ in range(100):
        question, pairs = BUILDERS[attribute](rng, k)
        prompt = rng.choice(PROMPT_OPENERS) + question
        if prompt not in seen:
            break
    return prompt, pairs


def generate_planted_pairs(num_pairs: int = 2000, seed: int = 0) -> list[dict]:
    """``num_pairs`` shuffled preference rows, balanced over ``ATTRIBUTES``; see the module docstring."""
    rng = random.Random(seed)
    base, extra = divmod(num_pairs, len(ATTRIBUTES))
    rows, prompt_ids = [], {}
    for i, attribute in enumerate(ATTRIBUTES):
        left = base + (i < extra)
        while left > 0:
            k = min(rng.choice((2, 3)), left)  # 2-3 pairs per prompt, so that splits must go by prompt
            prompt, pairs = _draw_prompt(rng, attribute, k, prompt_ids)
            prompt_id = prompt_ids.setdefault(prompt, f"planted-{len(prompt_ids):06d}")
            for chosen, rejected in pairs:
                flags = {side: {d: rng.random() < 0.5 for d in DISTRACTORS} for side in ("chosen", "rejected")}
                row = {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": _add_distractors(chosen, flags["chosen"], rng)}],
                    "rejected": [{"role": "assistant", "content": _add_distractors(rejected, flags["rejected"], rng)}],
                    "prompt_id": prompt_id,
                    "attribute": attribute,
                }
                for side in ("chosen", "rejected"):
                    row.update({f"{side}_{d}": flags[side][d] for d in DISTRACTORS})
                rows.append(row)
            left -= len(pairs)
    rng.shuffle(rows)
    return rows
