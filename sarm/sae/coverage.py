"""Coverage of planted attributes: can a single SAE latent classify each known property?

Following the board-game SAE papers (Karvonen et al., arXiv 2408.00113), a property is
*covered* to the extent that one latent, used as a binary classifier, recovers it. For latent j with
maximum activation m_j over the N rows and a threshold fraction t:

    predict_j,t(row) = latent_j(row) > t · m_j                      (strict: at t = 0, "fires at all")
    F1_j,t = 2 · TP / (predicted positives + actual positives)      (0 when both are 0)
    coverage(property) = max over latents j and t in ``thresholds`` of F1_j,t

A latent whose maximum is ≤ 0 (dead, or never positive) predicts nothing. Ties keep the first
(latent, t) found, scanning chunks of latents in order and, within a chunk, thresholds upwards.

Properties of planted preference data (``sarm.data.planted``), one label per *sequence*: the cache
numbers the sequences of pair i as 2·i (chosen) and 2·i + 1 (rejected):

    "<attribute>:chosen"    the chosen responses of pairs decided by <attribute>
    "<attribute>:rejected"  the rejected responses of those pairs
    "<distractor>"          responses carrying the distractor (meta flags chosen_<d> / rejected_<d>)

Deciding-attribute properties are the ones whose name contains ":"; ``coverage`` averages them
("mean") separately from the distractors ("mean_distractors"). During SAE training the
``sarm.callbacks.coverage.PlantedCoverage`` callback logs both on the validation split.
"""

from __future__ import annotations

import torch

DEFAULT_THRESHOLDS = tuple(i / 10 for i in range(10))  # 0.0, 0.1, ..., 0.9
SIDES = ("chosen", "rejected")


def planted_labels(pairs: list[dict]) -> dict[str, torch.Tensor]:
    """Boolean labels ``[2 · len(pairs)]`` per property, from the rows of a cache's ``pairs.jsonl``.

    Row i's sequences are 2·i (chosen) and 2·i + 1 (rejected). Rows without ``meta`` (or without an
    attribute / distractor flags in it) leave their sequences False everywhere.
    """
    n_sequences = 2 * len(pairs)
    labels: dict[str, torch.Tensor] = {}

    def label(name: str) -> torch.Tensor:
        return labels.setdefault(name, torch.zeros(n_sequences, dtype=torch.bool))

    for i, row in enumerate(pairs):
        meta = row.get("meta") or {}
        attribute = meta.get("attribute")
        if attribute:
            for offset, side in enumerate(SIDES):
                label(f"{attribute}:{side}")[2 * i + offset] = True
        for key, value in meta.items():
            for offset, side in enumerate(SIDES):
                # distractor flags are booleans named <side>_<distractor>, e.g. chosen_signoff
                if isinstance(value, bool) and key.startswith(f"{side}_"):
                    label(key[len(side) + 1 :])[2 * i + offset] |= value
    return dict(sorted(labels.items()))


def is_deciding(name: str) -> bool:
    return ":" in name


@torch.no_grad()
def coverage(
    latents: torch.Tensor,
    labels: dict[str, torch.Tensor],
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    max_elements: int = 1 << 23,
) -> dict[str, dict]:
    """Best single-latent F1 per property; see the module docstring.

    Args:
        latents: ``[N, n_latents]`` activations (one row per labelled sequence or token).
        labels: property name → bool ``[N]``.
        thresholds: fractions t of each latent's maximum activation.
        max_elements: rows × latents processed at once (memory bound: about 4 bytes each, a few
            times over); the latents are taken in chunks of ``max_elements // N``.

    Returns:
        property → {"f1", "latent", "threshold", "precision", "recall", "support"} (support = number
        of positive rows), plus "mean" → {"f1", "count"} over deciding-attribute properties and
        "mean_distractors" → {"f1", "count"} over the others (f1 is None when count is 0, so the
        result stays valid JSON).
    """
    if latents.ndim != 2:
        raise ValueError(f"latents must be [N, n_latents], got shape {tuple(latents.shape)}")
    n_rows, n_latents = latents.shape
    names = list(labels)
    for name in names:
        if labels[name].shape != (n_rows,):
            raise ValueError(f"label {name!r} has shape {tuple(labels[name].shape)}, expected ({n_rows},)")
    if n_rows >= 1 << 24:
        raise ValueError("coverage counts in float32: use fewer than 2**24 rows")  # exact integer counts

    # Counts are matrix products: TP[p, j] = Σ_rows label[row, p] · active[row, j].
    label_matrix = torch.zeros(len(names), n_rows, device=latents.device)
    for p, name in enumerate(names):
        label_matrix[p] = labels[name].to(latents.device).float()
    positives = label_matrix.sum(1, keepdim=True)  # [P, 1]
    best_f1 = torch.full((len(names),), -1.0, device=latents.device)
    best = {key: torch.zeros(len(names), dtype=torch.long, device=latents.device) for key in ("latent", "t")}
    best_tp = torch.zeros(len(names), device=latents.device)
    best_predicted = torch.zeros(len(names), device=latents.device)

    chunk = max(1, max_elements // max(n_rows, 1))
    for start in range(0, n_latents, chunk):
        block = latents[:, start : start + chunk].float()
        maxima = block.max(0).values
        for t_index, t in enumerate(thresholds):
            active = ((block > t * maxima) & (maxima > 0)).float()
            true_positive = label_matrix @ active  # [P, c]
            predicted = active.sum(0)  # [c]
            denominator = predicted + positives
            f1 = torch.where(denominator > 0, 2 * true_positive / denominator.clamp_min(1), 0.0)
            j = f1.argmax(1)  # the first maximal latent of the chunk
            f1_best = f1.gather(1, j[:, None])[:, 0]
            better = f1_best > best_f1  # strict: earlier latents and lower thresholds win ties
            best_f1 = torch.where(better, f1_best, best_f1)
            best["latent"] = torch.where(better, start + j, best["latent"])
            best["t"] = torch.where(better, t_index, best["t"])
            best_tp = torch.where(better, true_positive.gather(1, j[:, None])[:, 0], best_tp)
            best_predicted = torch.where(better, predicted[j], best_predicted)

    result: dict[str, dict] = {}
    for p, name in enumerate(names):
        tp, predicted, support = float(best_tp[p]), float(best_predicted[p]), float(positives[p, 0])
        result[name] = {
            "f1": max(float(best_f1[p]), 0.0),
            "latent": int(best["latent"][p]),
            "threshold": float(thresholds[int(best["t"][p])]),
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": int(support),
        }
    for key, keep in (("mean", is_deciding), ("mean_distractors", lambda name: not is_deciding(name))):
        scores = [result[name]["f1"] for name in names if keep(name)]
        result[key] = {"f1": sum(scores) / len(scores) if scores else None, "count": len(scores)}
    return result


@torch.no_grad()
def latent_f1(
    latents: torch.Tensor, label: torch.Tensor, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
) -> torch.Tensor:
    """``[n_latents]``: each latent's best F1 (over ``thresholds``) as a classifier of one property,
    by the rule of ``coverage`` (which keeps only the best latent per property)."""
    latents = latents.float()
    maxima = latents.max(0).values
    positives = label.sum()
    best = torch.zeros(latents.shape[1], device=latents.device)
    for t in thresholds:
        active = (latents > t * maxima) & (maxima > 0)
        true_positive = (active & label[:, None].to(active.device)).sum(0)
        denominator = active.sum(0) + positives
        best = torch.maximum(best, torch.where(denominator > 0, 2 * true_positive / denominator.clamp_min(1), 0.0))
    return best
