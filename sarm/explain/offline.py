"""Offline explanations: the n-grams that set a feature's activating contexts apart from background.

No model is asked anything. Windows are tokenized already (one decoded string per token); an
n-gram (n = 1..3) is a run of consecutive tokens, compared lowercased and with each token's
surrounding whitespace ignored (``ngram_key``), shown as its tokens joined and stripped
(" canno" + "t" → "cannot"). N-grams that start or end with a whitespace-only token are skipped:
they are a shorter n-gram padded with spaces or line breaks. Beside the n-grams, token classes compete
as one-token n-grams (``TOKEN_CLASSES``: digits, punctuation, pieces inside a word, line breaks), named
in words ("numbers (digit tokens)"): a feature that fires on any number is explained by that, not by
the five digits its train windows happened to hold, which held-out windows may not. ``occurrences`` is
the one matching rule (of the explainer, ``sarm.explain.detection``'s predictor and
``sarm.explain.fuzzing``'s judge).

Counts (document frequencies, so a token repeated inside one window counts once):

    A(g) = Σ_active contexts  max over occurrences of g  decay^gap
           gap = 0 when the occurrence covers the focus token, else its distance to the focus
    B(g) = number of background contexts containing g anywhere

The active side is weighted toward the focus because that is the token the feature fired on;
the background side is not weighted, because what makes an n-gram a poor explanation is that it
is common anywhere in text where the feature stays off (which is also what the n-gram detector
of ``sarm.explain.detection`` is judged on).

Score: the log-odds ratio of the two smoothed rates (a Beta(α, α) prior on each rate, α = 1, so an
n-gram seen in one window does not get an infinite score):

    score(g) = log((A + α) / (N_a − A + α)) − log((B + α) / (N_b − B + α))

N_a, N_b = numbers of distinct active and background windows (a window repeated, as a response shared by
several pairs is, counts once). The explanation lists the best positive n-grams with A ≥ ``min_support``
(by default, the weight of one occurrence at the focus), greedily, best score first: one that a listed one
subsumes (matches wherever it matches: "sorry I" after "sorry", "42" after numbers) is skipped, and one
that subsumes listed ones replaces them ("evidence" replaces "scientific evidence"): the more general
evidence is the likelier to occur in held-out text.

Measured (``scripts/explanations.py``, top-20 features, written from train windows, detection / fuzzing
balanced accuracy on val + test windows, seed 0): on the RewardBench 2 safety cache (runs/hh), 0.812 /
0.747 before these three changes, 0.863 / 0.777 with distinct windows and general-first selection,
0.857 / 0.783 with the token classes as well; on the planted demo (runs/demo), 0.834 / 0.730 before,
0.907 / 0.724 without the classes, 0.877 / 0.796 with them. The classes trade detection for fuzzing: line
breaks and digits are where code and list features fire (fuzzing gains), but background windows hold them
too (detection loses). (The changes were chosen looking at hh's held-out scores; the demo is the cleaner
check.)
"""

from __future__ import annotations

import math
import unicodedata
from collections import defaultdict

from sarm.explain.contexts import Context
from sarm.explain.store import Explanation


def ngram_key(tokens: list[str]) -> tuple[str, ...]:
    """Comparison form: each token lowercased and stripped, so " Sorry" (mid-text) matches "sorry" (first word)."""
    return tuple(t.strip().lower() for t in tokens)


def ngram_text(tokens: list[str]) -> str:
    """Display form: the tokens joined, stripped, line breaks written as \\n (one line of text)."""
    return "".join(tokens).strip().replace("\n", "\\n")


def _is_digits(tokens: list[str], j: int) -> bool:
    return tokens[j].strip().isdigit()


def _is_punctuation(tokens: list[str], j: int) -> bool:
    t = tokens[j].strip()
    return bool(t) and all(unicodedata.category(ch)[0] in "PS" for ch in t)


def _is_word_piece(tokens: list[str], j: int) -> bool:
    """A token that continues the previous one's word ("ble" after "trou"): no space between two letters."""
    return j > 0 and tokens[j][:1].isalpha() and tokens[j - 1][-1:].isalpha()


def _is_line_break(tokens: list[str], j: int) -> bool:
    return "\n" in tokens[j] and not tokens[j].strip()


# Token classes: a key element "<name>" matches any token of the class. The words are what a reader gets.
TOKEN_CLASSES = {
    "<digits>": (_is_digits, "numbers (digit tokens)"),
    "<punctuation>": (_is_punctuation, "punctuation marks"),
    "<word piece>": (_is_word_piece, "pieces inside words (a word split into several tokens)"),
    "<line break>": (_is_line_break, "line breaks"),
}


def occurrences(tokens: list[str], key: tuple[str, ...]) -> list[int]:
    """Start positions in the window where ``key`` occurs: each element a token's comparison form
    (``ngram_key``) or a class name of ``TOKEN_CLASSES`` matching any token of the class. The one matching
    rule of the offline explainer, its detection predictor and its fuzzing judge."""
    window = ngram_key(tokens)
    n = len(key)

    def matches(element: str, j: int) -> bool:
        rule = TOKEN_CLASSES.get(element)
        return rule[0](tokens, j) if rule is not None else window[j] == element

    if not n:
        return []
    return [i for i in range(len(tokens) - n + 1) if all(matches(e, i + m) for m, e in enumerate(key))]


def _ngrams(context: Context, max_n: int, classes: bool = False):
    """(key, display text, gap to the focus) of every n-gram of the window with visible text, and with
    ``classes`` every token class a window token belongs to (as a one-element key)."""
    tokens = context.tokens
    if classes:
        for name, (belongs, words) in TOKEN_CLASSES.items():
            for j in range(len(tokens)):
                if belongs(tokens, j):
                    yield (name,), words, abs(j - context.focus)
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            if not tokens[i].strip() or not tokens[i + n - 1].strip():
                continue  # an n-gram that starts or ends in whitespace is a shorter one, padded
            text = ngram_text(tokens[i : i + n])
            end = i + n - 1
            gap = 0 if i <= context.focus <= end else min(abs(i - context.focus), abs(end - context.focus))
            yield ngram_key(tokens[i : i + n]), text, gap


def _contains(outer: tuple, inner: tuple) -> bool:
    return any(outer[i : i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))


def _subsumes(general: tuple, specific: tuple) -> bool:
    """``general`` matches wherever ``specific`` does: a sub-n-gram of it, or a class holding its one token."""
    if len(general) == 1 and general[0] in TOKEN_CLASSES:
        return all(t not in TOKEN_CLASSES and TOKEN_CLASSES[general[0]][0]([t], 0) for t in specific)
    return len(general) < len(specific) and _contains(specific, general)


def score_ngrams(
    active: list[Context],
    background: list[Context],
    max_n: int = 3,
    decay: float = 0.5,
    prior: float = 1.0,
    classes: bool = False,
) -> list[dict]:
    """All n-grams of the active windows, scored as in the module docstring, best first."""
    weight: dict[tuple, float] = defaultdict(float)
    texts: dict[tuple, str] = {}
    for context in active:
        best: dict[tuple, float] = {}
        for key, text, gap in _ngrams(context, max_n, classes):
            best[key] = max(best.get(key, 0.0), decay**gap)
            texts.setdefault(key, text)
        for key, w in best.items():
            weight[key] += w
    present: dict[tuple, int] = defaultdict(int)
    for context in background:
        for key in {key for key, _, _ in _ngrams(context, max_n, classes)}:
            present[key] += 1
    n_a, n_b = len(active), len(background)
    scored = []
    for key, a in weight.items():
        b = present.get(key, 0)
        score = math.log((a + prior) / (n_a - a + prior)) - math.log((b + prior) / (n_b - b + prior))
        scored.append({"ngram": texts[key], "tokens": list(key), "score": score, "active": a, "background": b})
    # Best score first; among equals the longer (more specific) n-gram, then alphabetical for determinism.
    scored.sort(key=lambda e: (-e["score"], -len(e["tokens"]), e["ngram"]))
    return scored


def explain_offline(
    active: list[Context],
    background: list[Context],
    top: int = 5,
    max_n: int = 3,
    decay: float = 0.5,
    prior: float = 1.0,
    min_support: float = 1.0,
    classes: bool = True,
) -> Explanation:
    """An ``Explanation`` listing the ``top`` n-grams most over-represented near the activating tokens.

    ``evidence`` holds the listed n-grams with their score, weighted active count and background
    count; the text reads ``fires on "sorry", "cannot"`` (n-grams in the order they were listed), token
    classes in words (``fires on numbers (digit tokens), "%"``). ``classes``: let token classes compete.
    """
    # Distinct windows only: the same response appears in several pairs (one chosen, several rejected), and a
    # window counted three times makes its rarest n-grams look like the feature's evidence.
    active = list({tuple(c.tokens): c for c in active}.values())
    background = list({tuple(c.tokens): c for c in background}.values())
    chosen: list[dict] = []
    for entry in score_ngrams(active, background, max_n, decay, prior, classes):
        if len(chosen) == top:
            break
        if entry["score"] <= 0 or entry["active"] < min_support - 1e-9:
            continue
        key = tuple(entry["tokens"])
        if any(
            tuple(c["tokens"]) == key or c["ngram"] == entry["ngram"] or _subsumes(tuple(c["tokens"]), key)
            for c in chosen
        ):
            continue  # "sorry I" adds nothing beside "sorry", nor "42" beside numbers
        # The more general n-gram replaces those it matches wherever they match ("evidence" for
        # "scientific evidence"): it is what held-out text is likelier to contain.
        chosen = [c for c in chosen if not _subsumes(key, tuple(c["tokens"]))] + [entry]
    if chosen:
        text = "fires on " + ", ".join(
            c["ngram"] if c["tokens"][0] in TOKEN_CLASSES else f'"{c["ngram"]}"' for c in chosen
        )
    else:
        text = "no n-gram sets the activating contexts apart from the background"
    return Explanation(text=text, method="offline", evidence=chosen, detection=None)
