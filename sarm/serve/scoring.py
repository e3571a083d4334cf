"""One dynamic batch of checked payloads (``sarm.serve.requests``) scored in one ``RewardModel.score`` call, and each
payload's answer.

Scoring is ``RewardModel.score``'s, the path ``sarm score`` takes: the same rendering, left truncation at the
model's ``max_length``, right padding and pooling, so a served reward is the offline one; what differs is only which
texts share a forward pass, which moves a reward by float rounding at most (right padding leaves every real token's
hidden state as it was).

Answers:

* ``openrlhf``: ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``, OpenRLHF's remote reward model reply.
  ``rewards`` (= ``scores``) are the raw rewards, or the normalized ones when the server was started with
  ``normalize``; ``extra_logs`` holds per-text lists OpenRLHF logs: ``raw_reward`` when normalized, and for a
  residualized SARM its ``residual`` and ``feature_share``.
* ``sarm``: ``{"rewards": [...], "results": [{"reward", ["reward_normalized"], ["top_features"], ...}]}``, each
  result the fields ``sarm score`` writes for a single response.

A reward that is not finite is ``null``, as in ``sarm score``'s output.
"""

from __future__ import annotations

import math

from sarm.reward.inference import RewardModel
from sarm.score import residual_fields
from sarm.serve.requests import OPENRLHF


def score_payloads(model: RewardModel, payloads: list[dict], batch_size: int, normalize: bool) -> list[dict]:
    """The answer to each payload; ``normalize``: whether ``/get_reward`` answers with normalized rewards."""
    ends = _end_markers(model.tokenizer)
    prompts, responses = [], []
    for payload in payloads:
        for item in payload["items"]:
            prompts.append(item["prompt"])
            response = item["response"]
            responses.append(_strip_end(response, ends) if payload["protocol"] == OPENRLHF else response)
    scores = model.score(prompts, responses, batch_size)
    answers, start = [], 0
    for payload in payloads:
        rows = range(start, start + len(payload["items"]))
        start = rows.stop
        if payload["protocol"] == OPENRLHF:
            answers.append(_openrlhf(model, scores, rows, normalize))
        else:
            answers.append(_sarm(model, scores, rows, payload["top_features"], payload["normalize"]))
    return answers


def _openrlhf(model: RewardModel, scores, rows: range, normalize: bool) -> dict:
    raw = scores.rewards[rows.start : rows.stop]
    rewards = _numbers(model.normalize(raw) if normalize else raw)
    logs = {"raw_reward": _numbers(raw)} if normalize else {}
    if model.residualized:
        fields = [residual_fields(model, scores.features[i], scores.residual[i]) for i in rows]
        logs |= {name: [_finite(f[name]) for f in fields] for name in ("residual", "feature_share")}
    return {"rewards": rewards, "scores": list(rewards), "extra_logs": logs}


def _sarm(model: RewardModel, scores, rows: range, top_features: int, normalize: bool) -> dict:
    results = []
    for i in rows:
        result = {"reward": _finite(float(scores.rewards[i]))}
        if normalize:
            result["reward_normalized"] = _finite(float(model.normalize(scores.rewards[i])))
        if model.residualized:
            result |= {k: _finite(v) for k, v in residual_fields(model, scores.features[i], scores.residual[i]).items()}
        if top_features:
            top = model.top_features(scores.features[i], top_features)
            result["top_features"] = [{"feature": f, "contribution": _finite(c)} for f, c in top]
        results.append(result)
    return {"rewards": [r["reward"] for r in results], "results": results}


def _end_markers(tokenizer) -> tuple[str, ...]:
    """The pad and eos strings a trainer's decoded query may end with; the chat template writes its own end of
    turn, so they are not part of the response."""
    return tuple({t for t in (tokenizer.pad_token, tokenizer.eos_token) if t})


def _strip_end(response: str, markers: tuple[str, ...]) -> str:
    """``response`` without trailing pad/eos strings (and the whitespace between them)."""
    while markers:
        stripped = response.rstrip()
        for marker in markers:
            if stripped.endswith(marker):
                stripped = stripped[: -len(marker)]
        if stripped == response.rstrip():
            return response
        response = stripped
    return response


def _numbers(values) -> list[float | None]:
    return [_finite(float(v)) for v in values]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
