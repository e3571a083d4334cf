"""Ground-truth recovery on the built-in planted-attribute data: do SARM's explanations name the
attribute that really decided each pair?

For each deciding attribute A (``sarm.data.planted``), over the pairs A decides:

    top features      the 3 features ranked first by |mean margin contribution| of c_i = w_i (z_i^c − z_i^r)
                      over A's pairs (``rank_features``, the rule of every attribution table)
    F1                each one's best F1 as a single-feature classifier of A's responses (chosen
                      side or rejected side, thresholds as in ``sarm.sae.coverage``) over every
                      response of the split: does the feature detect the attribute anywhere?
    F1 within         the same, over the responses of A's pairs only: does the feature tell A's
                      good value (chosen) from its bad value (rejected), all else equal?
    ceiling           the best F1 (both kinds) of any feature, attributed or not: what the SAE offers
    zeroing effect    accuracy and mean margin on A's pairs before and after zeroing A's top feature,
                      and after zeroing all of its top features (``steering_effect``)

and for the distractors (sign-off line, verbosity: random with respect to the preference), the share
of the margin attribution carried by features that detect a distractor (best F1 ≥ 0.8 for it):

    distractor share = Σ_{distractor features} |mean margin contribution| / Σ_all |mean margin contribution|
"""

from __future__ import annotations

import torch

from sarm.attribution.contributions import margin_contributions, rank_features
from sarm.attribution.steering import steering_effect
from sarm.reward.network import RewardNetwork
from sarm.sae.coverage import is_deciding, latent_f1, planted_labels


@torch.no_grad()
def collect_pair_features(network: RewardNetwork, loader) -> dict[str, torch.Tensor]:
    """``z_chosen``, ``z_rejected`` ``[P, n_features]``, ``pair`` and ``subset`` of every pair a
    cached-activation loader (``PairActivationDataModule``) yields: every feature of every pair, which
    recovery's F1 needs (attribution itself keeps only the top features' terms, ``RewardAttribution``)."""
    parts: dict[str, list[torch.Tensor]] = {"z_chosen": [], "z_rejected": [], "pair": [], "subset": []}
    for batch in loader:
        z = network.features(batch["hidden"].float(), batch["mask"])
        n = z.shape[0] // 2
        parts["z_chosen"].append(z[:n])
        parts["z_rejected"].append(z[n:])
        parts["pair"].append(batch["pair"])
        parts["subset"].append(batch["subset"])
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def planted_recovery(
    network: RewardNetwork, features: dict[str, torch.Tensor], pairs: list[dict], top: int = 3
) -> dict:
    """The recovery table of a SARM over planted pairs.

    Args:
        network: the SARM network (its head weights).
        features: ``collect_pair_features`` output for the pairs of one split.
        pairs: the cache's ``pairs.jsonl`` rows (indexed by pair id).
        top: features listed per attribute.
    """
    zc, zr, ids = features["z_chosen"], features["z_rejected"], features["pair"]
    contributions = margin_contributions(network.head, zc, zr)  # [P, n]
    rows = [pairs[int(i)] for i in ids]
    labels = planted_labels(rows)  # sequences 2j / 2j + 1 of the j-th row here
    latents = torch.stack([zc, zr], dim=1).reshape(-1, zc.shape[-1])  # the same sequence order
    attributes = sorted({name.split(":")[0] for name in labels if is_deciding(name)})
    table = []
    for attribute in attributes:
        decided = torch.tensor([(row.get("meta") or {}).get("attribute") == attribute for row in rows])
        mean = contributions[decided].mean(0)
        best = rank_features(mean)[:top].tolist()
        # A feature may detect A's chosen side (positive weight) or its rejected side (negative).
        every = torch.maximum(
            latent_f1(latents, labels[f"{attribute}:chosen"]), latent_f1(latents, labels[f"{attribute}:rejected"])
        )
        # Within A's pairs only: does the feature tell A's good value from its bad one?
        sequences = torch.stack([2 * decided.nonzero().flatten(), 2 * decided.nonzero().flatten() + 1], 1).flatten()
        is_chosen = sequences % 2 == 0
        within = latents[sequences]
        every_within = torch.maximum(latent_f1(within, is_chosen), latent_f1(within, ~is_chosen))
        f1, f1_within = every[best].tolist(), every_within[best].tolist()
        effect = steering_effect(network, zc[decided], zr[decided], best[:1], "zero")
        effect_all = steering_effect(network, zc[decided], zr[decided], best, "zero")
        table.append(
            {
                "attribute": attribute,
                "pairs": int(decided.sum()),
                "features": best,
                "mean_margin_contribution": [float(mean[f]) for f in best],
                "f1": f1,
                "best_f1": max(f1),
                "f1_within": f1_within,
                "best_f1_within": max(f1_within),
                # what any feature reaches, attributed or not: the SAE's ceiling for A
                "ceiling_f1": float(every.max()),
                "ceiling_f1_within": float(every_within.max()),
                "accuracy_before": effect["accuracy_before"],
                "accuracy_zeroed": effect["accuracy"],
                "margin_before": effect["mean_margin_before"],
                "margin_zeroed": effect["mean_margin"],
                "accuracy_zeroed_top": effect_all["accuracy"],
                "margin_zeroed_top": effect_all["mean_margin"],
            }
        )

    # Distractor features: those that detect a distractor with F1 ≥ 0.8 (a feature firing on every
    # response already scores 2p/(1 + p) at prevalence p, about 0.6 here: 0.5 would count noise).
    mean_all = contributions.mean(0).abs()
    distractors = [name for name in labels if not is_deciding(name)]
    distractor_features: set[int] = set()
    for name in distractors:
        per_feature = latent_f1(latents, labels[name])
        distractor_features |= set((per_feature >= 0.8).nonzero().flatten().tolist())
    share = (
        float(mean_all[sorted(distractor_features)].sum() / mean_all.sum().clamp_min(1e-12))
        if distractor_features
        else 0.0
    )
    return {
        "attributes": table,
        "distractors": distractors,
        "distractor_features": sorted(distractor_features),
        "distractor_share": share,
    }
