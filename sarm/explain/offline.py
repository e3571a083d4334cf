"""Offline explanations: the n-grams that set a feature's activating contexts apart from background.

No model is asked anything. Windows are tokenized already (one decoded string per token); an
n-gram (n = 1..3) is a run of consecutive tokens, compared lowercased and with each token's
surrounding whitespace ignored (``ngram_key``), shown as its tokens joined and stripped
(" canno" + "t" → "cannot"). N-grams that start or end with a whitespace-only token are skipped:
they are a shorter n-gram padded with spaces or line breaks.

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

N_a, N_b = numbers of active and background contexts. The explanation lists the best positive
n-grams, greedily skipping any that is contained in (or contains) one already listed, and only
those with A ≥ ``min_support`` (by default, the weight of one occurrence at the focus).
"""

from __future__ import annotations

import math
from collections import defaultdict

from sarm.explain.contexts import Context
from sarm.explain.store import Explanation


def ngram_key(tokens: list[str]) -> tuple[str, ...]:
    """Comparison form: each token lowercased and stripped, so " Sorry" (mid-text) matches "sorry" (first word)."""
    return tuple(t.strip().lower() for t in tokens)


def ngram_text(tokens: list[str]) -> str:
    """Display form: the tokens joined, stripped, line breaks written as \\n (one line of text)."""
    return "".join(tokens).strip().replace("\n", "\\n")


def _ngrams(context: Context, max_n: int):
    """(key, display text, gap to the focus) of every n-gram of the window with visible text."""
    tokens = context.tokens
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


def score_ngrams(
    active: list[Context], background: list[Context], max_n: int = 3, decay: float = 0.5, prior: float = 1.0
) -> list[dict]:
    """All n-grams of the active windows, scored as in the module docstring, best first."""
    weight: dict[tuple, float] = defaultdict(float)
    texts: dict[tuple, str] = {}
    for context in active:
        best: dict[tuple, float] = {}
        for key, text, gap in _ngrams(context, max_n):
            best[key] = max(best.get(key, 0.0), decay**gap)
            texts.setdefault(key, text)
        for key, w in best.items():
            weight[key] += w
    present: dict[tuple, int] = defaultdict(int)
    for context in background:
        for key in {key for key, _, _ in _ngrams(context, max_n)}:
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
) -> Explanation:
    """An ``Explanation`` listing the ``top`` n-grams most over-represented near the activating tokens.

    ``evidence`` holds the listed n-grams with their score, weighted active count and background
    count; the text reads ``fires on "sorry", "cannot"`` (n-grams in the order of their scores).
    """
    chosen: list[dict] = []
    seen_texts: set[str] = set()
    for entry in score_ngrams(active, background, max_n, decay, prior):
        if len(chosen) == top:
            break
        if entry["score"] <= 0 or entry["active"] < min_support - 1e-9:
            continue
        key = tuple(entry["tokens"])
        if entry["ngram"] in seen_texts or any(
            _contains(tuple(c["tokens"]), key) or _contains(key, tuple(c["tokens"])) for c in chosen
        ):
            continue  # "sorry" adds nothing beside "sorry I"; list distinct evidence
        seen_texts.add(entry["ngram"])
        chosen.append(entry)
    if chosen:
        text = "fires on " + ", ".join(f'"{c["ngram"]}"' for c in chosen)
    else:
        text = "no n-gram sets the activating contexts apart from the background"
    return Explanation(text=text, method="offline", evidence=chosen, detection=None)
