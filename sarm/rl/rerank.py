"""``sarm rerank``: best-of-n. Score n candidate responses per prompt, keep the best, and say which features decided.

Input: a JSONL/JSON/Parquet/CSV file (any source ``sarm`` reads), one row per prompt:

    {"prompt": text | [{role, content}] | absent, "candidates": [text | [{"role": "assistant", ...}], ...], ...}

a prompt and candidates in TRL's plain or conversational form (``sarm.rl.samples``), each candidate rendered with
its prompt exactly as ``sarm score`` renders a prompt and response. Output: JSON Lines, one row per input row, in
input order (written atomically):

    {"row", "chosen", "response", "rewards": [r_1 … r_n], "runner_up", "margin", "decisive_features", ...}

``chosen`` is the index of the highest reward (the first of equal ones), ``response`` its text, ``runner_up`` the
index of the second highest and ``margin`` = r_chosen − r_runner_up ≥ 0. The margin splits exactly into feature
terms, c_i = w_i (z_i^chosen − z_i^runner_up) (``sarm.attribution.contributions.margin_contributions``, the
pairs' own split), and ``decisive_features`` lists the ``top_features`` largest |c_i|, largest first
(``largest_terms``), as ``{"feature", "contribution"}``: the features that made this candidate win over the next
best. A residualized SARM adds ``residual``, the residual's part of the margin, v · (h̃_chosen − h̃_runner_up).
With one candidate, ``runner_up``, ``margin`` and ``decisive_features`` are null / empty. A non-finite reward is
written as null and never chosen; a row with no finite reward has ``chosen`` null. Columns such as ``id`` are
copied through.

Bad rows (``prompt`` or ``candidates`` missing or of the wrong kind, an empty candidate list, a candidate that is
not text or an assistant message) are all named in one error, ``file:LINE: field 'candidates[2]': ...``, before
anything is scored.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sarm.attribution.contributions import largest_terms, margin_contributions
from sarm.data.responses import read_all
from sarm.data.rows import Message, RowError, jsonable, kind_of
from sarm.io import atomic_path, json_text
from sarm.reward.inference import RewardModel
from sarm.rl.samples import prompt_and_response


@dataclass
class RerankRow:
    """One prompt and its candidate responses, read as ``RewardModel.score`` reads them."""

    prompt: list[Message]
    candidates: list[str]
    meta: dict = field(default_factory=dict)


def load_rerank_rows(source: str | os.PathLike) -> list[RerankRow]:
    """Every row of ``source``; raises ``BadRowsError`` naming every bad row after reading the whole file."""
    return read_all(source, lambda row, _where: rerank_row(row))


def rerank_row(row: Any) -> RerankRow:
    """One ``{"prompt", "candidates"}`` row; a bad field raises ``RowError`` naming it (``candidates[i]`` for one
    candidate)."""
    if not isinstance(row, dict):
        raise RowError(None, f"expected a JSON object with 'candidates', got {kind_of(row)}")
    candidates = row.get("candidates")
    if candidates is None:
        raise RowError("candidates", "missing")
    if not isinstance(candidates, (list, tuple)):
        raise RowError("candidates", f"expected a list of responses, got {kind_of(candidates)}")
    if not candidates:
        raise RowError("candidates", "empty: nothing to choose from")
    prompt, texts = None, []
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, (str, list, dict)):
            raise RowError(f"candidates[{i}]", f"expected text or an assistant message, got {kind_of(candidate)}")
        try:
            prompt, text = prompt_and_response(row.get("prompt"), candidate)
        except RowError as err:
            raise RowError(f"candidates[{i}]" if err.field == "completion" else err.field, err.reason) from None
        texts.append(text)
    meta = {k: jsonable(v) for k, v in row.items() if k not in ("prompt", "candidates")}
    return RerankRow(prompt, texts, meta)


def rerank(
    model: str,
    data: str,
    output: str = "runs/rerank.jsonl",
    top_features: int = 5,
    batch_size: int = 8,
    normalize: bool = False,
    device: str = "cpu",
    copy_columns: tuple[str, ...] = ("id", "question_id", "prompt_id", "subset"),
) -> Path:
    """Best-of-n: keep the highest-reward candidate of each prompt, with the features that decided it.

    Args:
        model: directory of an exported reward model (``sarm.json``).
        data: a file of ``{"prompt", "candidates": [...]}`` rows (plain text or conversational).
        output: JSON Lines file to write: per row the chosen index and text, all rewards, and the margin over the
            runner-up split into its largest feature terms.
        top_features: how many decisive features to list per row (0: none).
        batch_size: sequences per forward pass.
        normalize: also write the rewards normalized with the validation mean/std stored in the model.
        device: ``cpu`` or ``cuda``.
        copy_columns: input columns copied to each output row when present.
    """
    rows = load_rerank_rows(data)
    reward_model = RewardModel.load(model, device=device)
    prompts = [row.prompt for row in rows for _ in row.candidates]
    scores = reward_model.score(prompts, [c for row in rows for c in row.candidates], batch_size)
    not_finite, start = 0, 0
    with atomic_path(output) as tmp, open(tmp, "w") as f:
        for i, row in enumerate(rows):
            span = slice(start, start + len(row.candidates))
            start = span.stop
            residual = None if scores.residual is None else scores.residual[span]
            record = choose(reward_model, scores.rewards[span], scores.features[span], residual, top_features)
            not_finite += sum(r is None for r in record["rewards"])
            if record["chosen"] is not None:
                record["response"] = row.candidates[record["chosen"]]
            if normalize:
                record["rewards_normalized"] = reward_model.normalize(scores.rewards[span]).tolist()
            record = {"row": i} | record | {k: row.meta[k] for k in copy_columns if k in row.meta}
            f.write(json_text(record) + "\n")  # non-finite numbers become null
    if not_finite:
        print(f"sarm: {not_finite} of {len(prompts)} rewards were not finite (written as null)", file=sys.stderr)
    print(f"sarm: {len(rows)} prompts, {len(prompts)} candidates reranked -> {output}", flush=True)
    return Path(output)


def choose(
    reward_model: RewardModel,
    rewards: torch.Tensor,
    features: torch.Tensor,
    residual: torch.Tensor | None,
    top_features: int,
) -> dict:
    """The choice among one prompt's candidates (module docstring): ``chosen``, ``rewards``, ``runner_up``,
    ``margin``, ``decisive_features`` (+ ``residual``), from their rewards ``[n]``, pooled features ``[n, F]`` and
    residual terms ``[n]``."""
    finite = [j for j in range(len(rewards)) if math.isfinite(float(rewards[j]))]
    # Highest reward first, then the lower index: a tie goes to the earlier candidate.
    order = sorted(finite, key=lambda j: (-float(rewards[j]), j))
    record = {
        "chosen": order[0] if order else None,
        "rewards": [float(r) if math.isfinite(float(r)) else None for r in rewards],
        "runner_up": None,
        "margin": None,
        "decisive_features": [],
    }
    if len(order) < 2:
        return record
    best, second = order[:2]
    with torch.no_grad():
        terms = margin_contributions(
            reward_model.feature_head, features[best : best + 1], features[second : second + 1]
        )
    index, values = largest_terms(terms, top_features) if top_features else (torch.zeros(1, 0), torch.zeros(1, 0))
    record |= {
        "runner_up": second,
        "margin": float(rewards[best] - rewards[second]),
        "decisive_features": [
            {"feature": int(f), "contribution": float(c)} for f, c in zip(index[0], values[0]) if c != 0
        ],
    }
    if residual is not None:
        record["residual"] = float(residual[best] - residual[second])
    return record
