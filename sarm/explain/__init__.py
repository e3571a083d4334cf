"""Explaining SAE features: top contexts, offline and LLM explanations, detection scores, a store.

    contexts.py    top-activating and background contexts of features, from an activation cache
    offline.py     n-grams over-represented near the activating tokens (no model needed)
    llm.py         a SAGE-style hypothesise → test → measure → refine loop with an LLM
    detection.py   balanced accuracy of an explanation at telling activating from other contexts
    store.py       explanations kept per (SAE fingerprint, feature, method), reused across runs

``explain_features`` ties them together for a cache and an SAE directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sarm.errors import SarmInputError
from sarm.explain.contexts import (
    Context,
    background_contexts,
    feature_activations,
    top_activating_contexts,
)
from sarm.explain.detection import detection_score, ngram_predictor
from sarm.explain.llm import PROMPTS, ChatClient, explain_with_llm, llm_predictor
from sarm.explain.offline import explain_offline, score_ngrams
from sarm.explain.store import (
    Explanation,
    ExplanationStore,
    default_store_path,
    sae_fingerprint,
)

__all__ = [
    "PROMPTS",
    "ChatClient",
    "Context",
    "Explanation",
    "ExplanationStore",
    "background_contexts",
    "default_store_path",
    "detection_score",
    "explain_features",
    "explain_offline",
    "explain_with_llm",
    "feature_activations",
    "llm_predictor",
    "ngram_predictor",
    "sae_fingerprint",
    "score_ngrams",
    "top_activating_contexts",
]

METHODS = ("offline", "llm")


def explain_features(
    cache_dir: str,
    sae_dir: str,
    features: list[int],
    *,
    method: str = "offline",
    k: int = 10,
    window: int = 12,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key_env: str = "OPENAI_API_KEY",
    activate: Callable[[list[str], int], list[float]] | None = None,
    store_path: str | None = None,
    n_background: int = 20,
    seed: int = 0,
) -> dict[int, dict]:
    """Explain ``features`` of the SAE in ``sae_dir`` from the activation cache in ``cache_dir``.

    Per feature, 2k top contexts (one per sequence) and 2·n_background background contexts (from
    other sequences) are drawn and split alternately by rank: the even ranks write the explanation,
    the odd ranks are held out to score it by detection (balanced accuracy; None when a side of
    the held-out set is empty, e.g. a feature that fired on a single sequence). Explanations are
    looked up in the store first (``store_path``, default ``default_store_path(sae_key)``) and only
    computed (and stored) when absent for this (SAE, feature, method).

    ``method="llm"`` needs ``llm_base_url``, ``llm_model`` and ``activate(texts, feature)``: the
    feature's real max activation over each text's tokens, through the cache's backbone and this
    SAE. Its detection predictor asks the same LLM, one request per held-out context.

    Returns ``{feature: {"explanation": {"text", "method", "detection", "evidence"},
    "contexts": [asdict(Context) of the k strongest contexts]}}``.
    """
    from sarm.backbone import load_tokenizer
    from sarm.cache import ActivationCache
    from sarm.sae.io import load_sae

    if method not in METHODS:
        raise SarmInputError(f"method = {method!r}: expected one of {METHODS}")
    client = None
    if method == "llm":
        missing = [
            name
            for name, value in (("llm_base_url", llm_base_url), ("llm_model", llm_model), ("activate", activate))
            if value is None
        ]
        if missing:
            raise SarmInputError(f"method 'llm' needs {', '.join(missing)}")
        client = ChatClient(llm_base_url, llm_model, llm_api_key_env)

    cache = ActivationCache(cache_dir)
    sae = load_sae(sae_dir)
    sae_key = sae_fingerprint(sae)
    store = ExplanationStore(store_path or default_store_path(sae_key))
    tokenizer = load_tokenizer(cache.manifest["model"])
    acts = feature_activations(cache, sae, features)  # one pass over the cache for all features
    tops = top_activating_contexts(cache, sae, features, tokenizer, k=2 * k, window=window, activations=acts)

    # Background from sequences other than the feature's top ones: a window elsewhere in a top
    # sequence would share its text (the same prompt, the same words around the firing token).
    backgrounds = background_contexts(
        cache,
        sae,
        list(tops),
        tokenizer,
        n=2 * n_background,
        window=window,
        seed=seed,
        exclude={f: {c.sequence for c in top} for f, top in tops.items()},
        activations=acts,
    )

    results: dict[int, dict] = {}
    for feature, top in tops.items():
        background = backgrounds[feature]
        # Alternate ranks: both halves span the same activation range, so the held-out half is a
        # fair test of what the explanation was written from.
        write_active, held_active = top[0::2], top[1::2]
        write_background, held_background = background[0::2], background[1::2]

        explanation = store.get(sae_key, feature, method)
        if explanation is None and not top:
            # Not stored: a feature that never fires here may fire on other data.
            explanation = Explanation(text="does not fire on this cache", method=method)
        elif explanation is None:
            if method == "offline":
                explanation = explain_offline(write_active, write_background)
                predict = ngram_predictor(explanation)
            else:
                explanation = explain_with_llm(client, write_active, lambda texts, f=feature: activate(texts, f))
                predict = llm_predictor(client, explanation)
            if held_active and held_background:
                explanation.detection = detection_score(predict, held_active, held_background)
            store.put(
                sae_key,
                feature,
                explanation,
                cache=str(Path(cache_dir).resolve()),
                cache_fingerprint=cache.manifest.get("fingerprint"),
                contexts={
                    "written_from": [len(write_active), len(write_background)],
                    "held_out": [len(held_active), len(held_background)],
                },
            )
        results[feature] = {"explanation": explanation.to_dict(), "contexts": [asdict(c) for c in top[:k]]}
    return results
