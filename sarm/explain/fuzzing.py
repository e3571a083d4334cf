"""Scoring an explanation by fuzzing (as EleutherAI's delphi does), with an offline n-gram judge.

Detection asks whether an explanation tells activating from non-activating contexts; fuzzing asks
whether it tells *which tokens* of an activating context the feature fired on.

For each held-out activating context c (a window with at least one active token), two highlighted
copies are made:

    correct  highlight the truly active positions  H = {j : c.activations[j] > 0}
    fuzzed   highlight |H| positions drawn at random (seeded) among the inactive positions of the
             window; when the window has fewer than |H| inactive positions, the rest are drawn
             among the active ones (a window that is all active has no fuzzed copy and is skipped)

A judge that sees only the tokens, the highlighted positions and the explanation (never the
activations) says, for each copy, whether its highlighting is correct. The score is the balanced
accuracy over the two classes

    fuzzing = ½ · (correct copies called correct / #correct + fuzzed copies called fuzzed / #fuzzed)

so 1.0 is a perfect judge, 0.5 is chance (any constant answer scores exactly 0.5), below 0.5 is
worse than chance. (The classes are balanced by construction; the balanced form keeps the formula
of ``sarm.explain.detection``.)

Offline judge for n-gram explanations (``ngram_judge``): a token is *covered* when it lies inside
an occurrence, in the window, of one of the explanation's evidence n-grams (matched as in
``sarm.explain.offline.occurrences``: literal tokens or token classes). With H the highlighted positions
and U the others,

    correct  ⇔  covered(H)/|H| > covered(U)/|U|        (covered(∅)/|∅| = 0)

i.e. the highlighting is called correct when the highlighted tokens are covered more often than the
unhighlighted ones. An explanation with no n-grams covers nothing, always answers "fuzzed", and
scores 0.5. The LLM judge (``sarm.explain.llm.llm_judge``) takes the same ``Callable[[HighlightedContext],
bool]`` slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sarm.explain.contexts import Context
from sarm.explain.offline import occurrences
from sarm.explain.store import Explanation


@dataclass
class HighlightedContext:
    """An activating context with some of its positions highlighted; ``correct`` is the hidden label."""

    context: Context
    highlighted: list[int]  # sorted window positions
    correct: bool

    @property
    def tokens(self) -> list[str]:
        return self.context.tokens

    def marked_text(self, left: str = "<<", right: str = ">>") -> str:
        """The window with each highlighted token wrapped (what an LLM judge would read)."""
        marked = set(self.highlighted)
        return "".join(f"{left}{t}{right}" if j in marked else t for j, t in enumerate(self.tokens))


def active_positions(context: Context) -> list[int]:
    return [j for j, a in enumerate(context.activations) if a > 0]


def highlight(contexts: list[Context], seed: int = 0) -> list[HighlightedContext]:
    """A correct and a fuzzed copy of each context that has both (module docstring), in context order."""
    rng = random.Random(seed)
    out = []
    for context in contexts:
        active = active_positions(context)
        inactive = [j for j in range(len(context.tokens)) if j not in set(active)]
        if not active or not inactive:
            continue  # nothing to highlight, or every random highlight would be the correct one
        fuzzed = rng.sample(inactive, min(len(active), len(inactive)))
        if len(fuzzed) < len(active):
            fuzzed += rng.sample(active, len(active) - len(fuzzed))
        out.append(HighlightedContext(context, active, True))
        out.append(HighlightedContext(context, sorted(fuzzed), False))
    return out


def fuzzing_score(judge: Callable[[HighlightedContext], bool], examples: list[HighlightedContext]) -> float:
    """Balanced accuracy of ``judge`` at calling correct highlights correct and fuzzed ones fuzzed."""
    correct = [e for e in examples if e.correct]
    fuzzed = [e for e in examples if not e.correct]
    if not correct or not fuzzed:
        raise ValueError(f"fuzzing needs correct and fuzzed examples (got {len(correct)} and {len(fuzzed)})")
    true_positive = sum(bool(judge(e)) for e in correct)
    true_negative = sum(not judge(e) for e in fuzzed)
    return 0.5 * (true_positive / len(correct) + true_negative / len(fuzzed))


def covered_positions(tokens: list[str], keys: list[tuple[str, ...]]) -> set[int]:
    """Window positions inside an occurrence of any n-gram in ``keys``."""
    covered: set[int] = set()
    for key in keys:
        for i in occurrences(tokens, key):
            covered.update(range(i, i + len(key)))
    return covered


def ngram_judge(explanation: Explanation) -> Callable[[HighlightedContext], bool]:
    """Calls a highlighting correct when its tokens are covered by the evidence n-grams more than the rest."""
    keys = [tuple(e["tokens"]) for e in explanation.evidence if e.get("tokens")]

    def judge(example: HighlightedContext) -> bool:
        covered = covered_positions(example.tokens, keys)
        marked = set(example.highlighted)
        rest = [j for j in range(len(example.tokens)) if j not in marked]
        inside = len(covered & marked) / len(marked) if marked else 0.0
        outside = len(covered.intersection(rest)) / len(rest) if rest else 0.0
        return inside > outside

    return judge
