"""Offline explanations of a SARM's top features, judged on held-out contexts by detection and fuzzing.

    python scripts/explanations.py --cache runs/hh/cache --sarm runs/hh/sarm [--features_json F] [--output D]
        [--endpoint http://localhost:8000/v1 --model NAME]

Features: the ``--top`` first of an attribution ``features.json`` (``--features_json``, as ``sarm attribute``
writes it), else the top by the one ranking rule (``sarm.attribution.rank_features``: |mean margin contribution|
w_i·(z_i^chosen − z_i^rejected)) over the cache's test split through the exported SARM. Explanations: offline
n-grams written from train-split contexts only; scored on val + test contexts only (``sarm.explain.heldout``):
detection (activating vs. background windows) and fuzzing (true vs. random highlights) balanced accuracy.
With ``--endpoint`` (an OpenAI-compatible server) and ``--model``, the LLM loop (``sarm.explain.llm``: hypotheses
tested on the SARM's real activations, through its backbone and SAE) explains the same features from the same
train contexts, the same LLM judges detection and fuzzing on the same held-out contexts, and both explainers'
scores print side by side; without one the LLM columns say "not run". Prints a table and the means; writes
``<output>/explanations.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch
from jsonargparse import CLI

from sarm.attribution import rank_features
from sarm.io import write_json


def ranked_features(cache: str, sarm: str, top: int, features_json: str | None) -> tuple[list[int], str]:
    if features_json is not None:
        rows = json.loads(Path(features_json).read_text())["features"]
        return [int(r["feature"]) for r in rows[:top]], f"{features_json} ({len(rows)} ranked)"
    from sarm.cache import PairActivationDataModule
    from sarm.reward.export import load_network
    from sarm.reward.pooled import pooled_features

    network, _ = load_network(sarm)
    network.eval()
    with torch.no_grad():
        chosen, rejected, _ = pooled_features(network, PairActivationDataModule(cache), "test")
    weight = network.head.weight.detach().reshape(-1)
    mean = ((chosen - rejected) * weight).mean(0)
    return rank_features(mean)[:top].tolist(), f"|mean margin contribution| over {len(chosen)} test pairs"


def activation_probe(sarm: str):
    """``activate(texts, feature)`` through the SARM's own backbone and SAE (what the report's LLM loop uses)."""
    from sarm.report.build import _activation_probe

    return _activation_probe(sarm)


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(rows: list[dict]) -> dict:
    """Mean detection and fuzzing over the features that have each score (and the malformed LLM replies)."""
    out = {
        "detection_mean": mean([r["detection"] for r in rows]),
        "fuzzing_mean": mean([r["fuzzing"] for r in rows]),
        "detection_scored": sum(r["detection"] is not None for r in rows),
        "fuzzing_scored": sum(r["fuzzing"] is not None for r in rows),
    }
    if any("verdicts" in r for r in rows):
        out["malformed"] = sum(v["malformed"] for r in rows for v in r.get("verdicts", {}).values())
    return out


def short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


def main(
    cache: str,
    sarm: str,
    features_json: str | None = None,
    top: int = 20,
    k: int = 20,
    n_background: int = 40,
    window: int = 12,
    seed: int = 0,
    output: str = "runs/explanations",
    threads: int = 2,
    endpoint: str | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
) -> dict:
    """Explain the SARM's top features offline from train contexts; score them on val + test contexts.

    Args:
        cache: a `sarm cache` directory (its tokenizer renders the windows).
        sarm: an exported SARM (its SAE makes the features; its head ranks them).
        features_json: an attribution features.json to read the ranking from (default: rank here, test split).
        top: how many features.
        k: top-activating contexts per feature and side (written from; held out).
        n_background: background contexts per feature and side.
        window: tokens either side of the focus token.
        seed: background draws and fuzzed highlights.
        output: directory for explanations.json.
        threads: torch CPU threads.
        endpoint: base URL of an OpenAI-compatible chat endpoint (e.g. http://localhost:8000/v1) for the LLM
            loop and the LLM judges; None: only the offline explainer runs.
        model: the model name sent to ``endpoint`` (required with it).
        api_key_env: environment variable holding the endpoint's API key (unset: none sent).
    """
    from sarm.backbone import load_tokenizer
    from sarm.cache import ActivationCache
    from sarm.errors import SarmInputError
    from sarm.explain.contexts import feature_activations
    from sarm.explain.heldout import held_out_contexts, score_llm, score_offline
    from sarm.explain.llm import ChatClient
    from sarm.reward.export import SAE_DIR
    from sarm.sae.io import load_sae

    if endpoint is not None and not model:
        raise SarmInputError("--endpoint needs --model (the model name the server serves)")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    start = time.perf_counter()
    features, ranking = ranked_features(cache, sarm, top, features_json)
    print(f"features ({ranking}) in {time.perf_counter() - start:.0f} s: {features}", flush=True)
    activation_cache = ActivationCache(cache)
    sae = load_sae(Path(sarm) / SAE_DIR)
    tokenizer = load_tokenizer(activation_cache.manifest["model"])
    acts = feature_activations(activation_cache, sae, features)
    contexts = held_out_contexts(
        activation_cache, sae, features, tokenizer, k=k, n_background=n_background, window=window, seed=seed,
        activations=acts,
    )  # fmt: skip
    rows = [{"rank": i + 1, "feature": f, **score_offline(contexts[f], seed=seed)} for i, f in enumerate(features)]
    if endpoint is not None:
        client = ChatClient(endpoint, model, api_key_env)
        activate = activation_probe(sarm)
        for row in rows:
            f = row["feature"]
            row["llm"] = score_llm(client, contexts[f], lambda texts, f=f: activate(texts, f), seed=seed)

    print(f"\n{cache}: top {len(features)} features by {ranking}; written from train, scored on val+test")
    print(f"{'':>12} {'offline':^13} {'LLM loop':^13}")
    print(f"{'rank':>4} {'feature':>7} {'detect':>6} {'fuzz':>6} {'detect':>6} {'fuzz':>6} {'held':>7}  explanation")
    for r in rows:
        held = f"{r['contexts']['held_active']}/{r['contexts']['held_background']}"
        llm = r.get("llm") or {}
        scores = (r["detection"], r["fuzzing"], llm.get("detection"), llm.get("fuzzing"))
        cells = " ".join(f"{fmt(v):>6}" for v in scores)
        print(f"{r['rank']:>4} {r['feature']:>7} {cells} {held:>7}  {short(r['explanation'])}")
        if llm:  # the LLM's explanation on its own line, under the offline one
            print(f"{'':>48}  LLM: {short(llm['explanation'])}")
    summary = {"offline": summarize(rows), "llm": summarize([r["llm"] for r in rows]) if endpoint else None}
    summary["seconds"] = time.perf_counter() - start
    for name, label in (("offline", "offline explainer, n-gram judge"), ("llm", "LLM loop, LLM judge")):
        s = summary[name]
        if s is None:
            print(f"{label}: not run (no --endpoint given)")
            continue
        malformed = f"; {s['malformed']} malformed judge replies (counted as no)" if "malformed" in s else ""
        print(
            f"{label}: mean detection {fmt(s['detection_mean'])} over {s['detection_scored']} features; "
            f"mean fuzzing {fmt(s['fuzzing_mean'])} over {s['fuzzing_scored']}{malformed}"
        )
    print(f"{summary['seconds']:.0f} s")
    result = {
        "cache": cache,
        "sarm": sarm,
        "ranking": ranking,
        "settings": {
            "top": top, "k": k, "n_background": n_background, "window": window, "seed": seed,
            "endpoint": endpoint, "model": model,
        },
        "summary": summary,
        "features": rows,
    }  # fmt: skip
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "explanations.json", result)
    return result


if __name__ == "__main__":
    CLI(main, as_positional=False)
