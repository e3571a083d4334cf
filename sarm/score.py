"""``sarm score``: rewards of new data from an exported reward model, with the features behind each.

Input: a JSONL/JSON/Parquet/CSV file of preference pairs (any layout ``sarm`` reads) or of single
responses (``prompt`` + ``response``). Output: JSON Lines, one row per input row, in input order:

    single responses   {"row", "reward", ["reward_normalized"], "top_features": [{"feature", "contribution"}], ...}
    pairs              {"row", "chosen_reward", "rejected_reward", "margin", "chosen_wins", "top_features", ...}

where a pair's ``top_features`` split its margin: contribution_i = w_i · (z_chosen,i − z_rejected,i).
Columns such as ``id`` are copied through. The output file is written atomically.

A residualized SARM (``sarm.reward.residual``: reward = w · z + v · h̃) adds two fields to each row, beside
``top_features`` (which list feature terms only):

    residual        the residual term: v · h̃ of the response, or for a pair its part of the margin,
                    b = v · (h̃_chosen − h̃_rejected)
    feature_share   |a| / (|a| + |b|) (1 when both are 0), where a is the features' part: a = w · z of the
                    response (its reward less the residual), or for a pair a = w · (z_chosen − z_rejected)
                    (its margin less b); ``sarm.reward.residual.feature_share`` of that one row. null when
                    the reward is not finite.

The output is strict JSON. A model whose files hold a NaN or inf is refused when it is loaded; a
reward that still comes out non-finite (an overflow, a backbone that produces inf) is written as
``null``, as is everything computed from it (its pair's ``margin`` and ``chosen_wins``, normalized
rewards, contributions), and stderr says how many: ``sarm: N of M rewards were not finite (written
as null)``. The run still succeeds: the other rows are good.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from sarm.data.preference import load_preferences
from sarm.data.responses import is_response_data, load_responses
from sarm.io import atomic_path, json_text
from sarm.reward.inference import RewardModel
from sarm.reward.residual import feature_share


def score(
    model: str,
    data: str,
    output: str = "runs/scores.jsonl",
    batch_size: int = 8,
    normalize: bool = False,
    top_features: int = 5,
    device: str = "cpu",
    copy_columns: tuple[str, ...] = ("id", "question_id", "prompt_id", "subset"),
) -> Path:
    """Score every row of ``data`` with the reward model exported at ``model``.

    Args:
        model: directory of an exported reward model (``sarm.json``).
        data: a file of preference pairs, or of ``prompt`` + ``response`` rows.
        output: JSON Lines file to write.
        batch_size: sequences per forward pass.
        normalize: also write rewards normalized with the validation mean/std stored in the model.
        top_features: how many top contributing features to list per row (0: none).
        device: ``cpu`` or ``cuda``.
        copy_columns: input columns copied to each output row when present.
    """
    reward_model = RewardModel.load(model, device=device)
    records, rewards = [], []
    if is_response_data(data):
        rows = load_responses(data)
        scores = reward_model.score([r.prompt for r in rows], [r.response for r in rows], batch_size)
        for i, row in enumerate(rows):
            record = {"row": i, "reward": float(scores.rewards[i])}
            rewards.append(record["reward"])
            if normalize:
                record["reward_normalized"] = float(reward_model.normalize(scores.rewards[i]))
            if reward_model.residualized:
                record |= residual_fields(reward_model, scores.features[i], scores.residual[i])
            records.append((row.meta, record, scores.features[i]))
    else:
        pairs = load_preferences(data)
        prompts = [p.prompt for p in pairs]
        chosen = reward_model.score(prompts, [p.chosen for p in pairs], batch_size)
        rejected = reward_model.score(prompts, [p.rejected for p in pairs], batch_size)
        for i, pair in enumerate(pairs):
            c, r = float(chosen.rewards[i]), float(rejected.rewards[i])
            rewards += [c, r]
            finite = math.isfinite(c) and math.isfinite(r)  # else no margin, no winner
            record = {
                "row": i,
                "chosen_reward": c,
                "rejected_reward": r,
                "margin": c - r if finite else None,
                "chosen_wins": c > r if finite else None,
            }
            if normalize:
                record["chosen_reward_normalized"] = float(reward_model.normalize(chosen.rewards[i]))
                record["rejected_reward_normalized"] = float(reward_model.normalize(rejected.rewards[i]))
            diff = chosen.features[i] - rejected.features[i]
            if reward_model.residualized:
                record |= residual_fields(reward_model, diff, chosen.residual[i] - rejected.residual[i])
            records.append((pair.meta, record, diff))
    with atomic_path(output) as tmp, open(tmp, "w") as f:
        for meta, record, z in records:
            record |= {k: meta[k] for k in copy_columns if k in meta}
            if top_features:
                record["top_features"] = [
                    {"feature": i, "contribution": c} for i, c in reward_model.top_features(z, top_features)
                ]
            f.write(json_text(record) + "\n")  # non-finite numbers become null
    not_finite = sum(not math.isfinite(r) for r in rewards)
    if not_finite:
        print(
            f"sarm: {not_finite} of {len(rewards)} rewards were not finite (written as null)",
            file=sys.stderr,
            flush=True,
        )
    print(f"sarm: {len(records)} rows scored -> {output}", flush=True)
    return Path(output)


def residual_fields(reward_model: RewardModel, z, residual) -> dict:
    """``residual`` and ``feature_share`` of one row (module docstring): ``z`` the pooled features of a response
    (or a pair's difference), ``residual`` its residual term (or difference)."""
    a, b = reward_model.feature_term(z).detach().reshape(1), residual.detach().reshape(1)
    finite = bool(a.isfinite().all() and b.isfinite().all())
    return {"residual": float(b[0]), "feature_share": feature_share(a, b) if finite else None}
