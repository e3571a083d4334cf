"""Explanations judged on held-out contexts: written from the train split, scored on val + test.

``held_out_contexts`` draws, per feature, from the cache's train split the ``k`` top-activating and
``n_background`` background contexts the explanation is written from, and from the val and test
splits (pairs the explanation never saw: the cache splits by pair) the ``k`` top-activating and
``n_background`` background contexts it is scored on. ``score_explanation`` scores an explanation on the
second by detection (``sarm.explain.detection``) and fuzzing (``sarm.explain.fuzzing``), both balanced
accuracies, with a given predictor and judge; a score is None when its held-out classes are empty (a
feature that never fires on val/test, or fires with every token of its windows active). Two explainers
write from the first:

    score_offline  the offline n-gram explanation (``sarm.explain.offline``), judged offline (the n-gram
                   predictor and judge: the explanation's own evidence, matched in the text)
    score_llm      the LLM loop's explanation (``sarm.explain.llm.explain_with_llm``, its tests measured by
                   the caller's ``activate``), judged by the same LLM (``llm_predictor``, ``llm_judge``)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from sarm.explain.contexts import Context, background_contexts, feature_activations, top_activating_contexts
from sarm.explain.detection import detection_score, ngram_predictor
from sarm.explain.fuzzing import HighlightedContext, fuzzing_score, highlight, ngram_judge
from sarm.explain.llm import ChatClient, Verdicts, explain_with_llm, llm_judge, llm_predictor
from sarm.explain.offline import explain_offline
from sarm.explain.store import Explanation

WRITE_SPLITS = ("train",)
HELD_OUT_SPLITS = ("val", "test")


def _top(cache, sae, features, tokenizer, k, window, splits, acts) -> dict[int, list[Context]]:
    merged: dict[int, list[Context]] = {f: [] for f in features}
    for split in splits:
        for f, contexts in top_activating_contexts(
            cache, sae, features, tokenizer, k=k, window=window, split=split, activations=acts
        ).items():
            merged[f] += contexts
    # Best first across splits; ties by sequence for determinism.
    return {f: sorted(cs, key=lambda c: (-c.activation, c.sequence))[:k] for f, cs in merged.items()}


def _background(cache, sae, features, tokenizer, n, window, seed, splits, exclude, acts) -> dict[int, list[Context]]:
    merged: dict[int, list[Context]] = {f: [] for f in features}
    per_split = -(-n // len(splits))
    for split in splits:
        for f, contexts in background_contexts(
            cache,
            sae,
            features,
            tokenizer,
            n=per_split,
            window=window,
            seed=seed,
            split=split,
            exclude=exclude,
            activations=acts,
        ).items():
            merged[f] += contexts
    return {f: cs[:n] for f, cs in merged.items()}


def held_out_contexts(
    cache,
    sae,
    features: list[int],
    tokenizer,
    k: int = 20,
    n_background: int = 40,
    window: int = 12,
    seed: int = 0,
    activations: dict | None = None,
) -> dict[int, dict[str, list[Context]]]:
    """Per feature ``{"write_active", "write_background", "held_active", "held_background"}`` (module docstring)."""
    features = list(dict.fromkeys(int(f) for f in features))
    acts = activations if activations is not None else feature_activations(cache, sae, features)
    out = {}
    parts = {}
    for name, splits in (("write", WRITE_SPLITS), ("held", HELD_OUT_SPLITS)):
        top = _top(cache, sae, features, tokenizer, k, window, splits, acts)
        exclude = {f: {c.sequence for c in cs} for f, cs in top.items()}
        background = _background(cache, sae, features, tokenizer, n_background, window, seed, splits, exclude, acts)
        parts[name] = (top, background)
    for f in features:
        out[f] = {
            "write_active": parts["write"][0][f],
            "write_background": parts["write"][1][f],
            "held_active": parts["held"][0][f],
            "held_background": parts["held"][1][f],
        }
    return out


def score_explanation(
    explanation: Explanation,
    contexts: dict[str, list[Context]],
    predict: Callable[[Context], bool],
    judge: Callable[[HighlightedContext], bool],
    seed: int = 0,
) -> dict:
    """Held-out detection (``predict``) and fuzzing (``judge``, highlights drawn with ``seed``) of ``explanation``."""
    held_active, held_background = contexts["held_active"], contexts["held_background"]
    detection = None
    if held_active and held_background:
        detection = detection_score(predict, held_active, held_background)
    examples = highlight(held_active, seed=seed)
    fuzzing = fuzzing_score(judge, examples) if examples else None
    explanation.detection = detection
    return {
        "explanation": explanation.text,
        "evidence": explanation.evidence,
        "detection": detection,
        "fuzzing": fuzzing,
        "contexts": {name: len(cs) for name, cs in contexts.items()},
        "fuzzing_examples": len(examples),
    }


def score_offline(contexts: dict[str, list[Context]], seed: int = 0, **explain_kwargs) -> dict:
    """The offline explanation from the write contexts, and its held-out detection and fuzzing scores."""
    explanation = explain_offline(contexts["write_active"], contexts["write_background"], **explain_kwargs)
    return score_explanation(explanation, contexts, ngram_predictor(explanation), ngram_judge(explanation), seed)


def score_llm(
    client: ChatClient,
    contexts: dict[str, list[Context]],
    activate: Callable[[list[str]], list[float]],
    seed: int = 0,
    **loop_kwargs,
) -> dict:
    """The LLM loop's explanation from the write contexts' top exemplars, scored held out by the same LLM.

    ``activate(texts)``: the feature's real max activation over each text (``explain_with_llm``). The row adds
    ``verdicts``: per scorer, how many replies were yes, no and malformed (counted as no; ``sarm.explain.llm``).
    """
    verdicts = {"detection": Verdicts(), "fuzzing": Verdicts()}
    if not contexts["write_active"]:  # the loop needs exemplars; a feature silent on train has none
        explanation = Explanation(text="does not fire on the train split", method="llm")
    else:
        explanation = explain_with_llm(client, contexts["write_active"], activate, **loop_kwargs)
    row = score_explanation(
        explanation,
        contexts,
        llm_predictor(client, explanation, verdicts["detection"]),
        llm_judge(client, explanation, verdicts["fuzzing"]),
        seed,
    )
    row["verdicts"] = {name: asdict(v) for name, v in verdicts.items()}
    return row
