"""Scoring an explanation by detection (as EleutherAI's delphi does).

Given held-out activating contexts (the feature fired on their focus token) and non-activating
ones (it did not fire), a predictor that knows only the explanation says, for each context,
whether the feature fires. The score is the balanced accuracy

    detection = ½ · (TP / |active| + TN / |inactive|)

so 1.0 is a perfect detector, 0.5 is chance (a constant answer scores exactly 0.5 whatever the
class balance), below 0.5 is worse than chance. The contexts must not be the ones the explanation
was written from, or the score measures memorization.

A predictor must read only the text of a context (``context.tokens``), never its activations or
focus: the active and background windows are built the same way (a window around one token), so
the text alone has to tell them apart.

Predictors: ``ngram_predictor`` for offline explanations (a context is predicted active when it
contains any of the explanation's evidence n-grams, matched by ``sarm.explain.offline.occurrences``);
``sarm.explain.llm.llm_predictor`` for LLM explanations (the LLM answers yes/no).
"""

from __future__ import annotations

from collections.abc import Callable

from sarm.explain.contexts import Context
from sarm.explain.offline import occurrences
from sarm.explain.store import Explanation


def detection_score(predict: Callable[[Context], bool], active: list[Context], inactive: list[Context]) -> float:
    """Balanced accuracy of ``predict`` on activating (``active``) and non-activating contexts."""
    if not active or not inactive:
        raise ValueError(
            f"detection needs both activating and non-activating contexts (got {len(active)} and {len(inactive)})"
        )
    true_positive = sum(bool(predict(c)) for c in active)
    true_negative = sum(not predict(c) for c in inactive)
    return 0.5 * (true_positive / len(active) + true_negative / len(inactive))


def ngram_predictor(explanation: Explanation) -> Callable[[Context], bool]:
    """Predicts active when the window contains one of the evidence n-grams (a run of its tokens)."""
    keys = [tuple(e["tokens"]) for e in explanation.evidence if e.get("tokens")]

    def predict(context: Context) -> bool:
        return any(occurrences(context.tokens, key) for key in keys)

    return predict
