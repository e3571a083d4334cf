"""``sarm drift``: the feature-drift monitor. A reference and a file of samples through one reward model → per-feature
share of reward on each, the features whose share rose (``sarm.rl.drift``), a JSON table and a PNG plot.

Reference (``--reference``), any of:

* a ``sarm cache`` directory: the pooled features of its pairs' chosen and rejected responses (``--split``), read
  from the cached hidden states, no backbone run. The cache must come from the model's backbone and layer;
* a preference file (any layout ``sarm`` reads): chosen and rejected responses scored by the model;
* a file of ``prompt`` + ``response`` rows (an earlier batch of samples, say).

Samples (``--samples``): a file of ``prompt`` + ``response`` rows (``sarm score``'s single-response input), such as
the completions an RL run logged. Prompts are the bootstrap's units (``prompt_id`` when a row has one, else the
prompt's messages), so the completions of one prompt are resampled together.

Output directory: ``drift.json`` (settings, counts, the flagged features, and per tested feature its weight, both
shares, Δ, se, the interval and the flags, largest Δ first) and ``drift.png`` (the ``plot_features`` features with
the largest Δ, ``sarm.report.plots.drift_bars``). The command prints the flagged features.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import torch

from sarm.data.preference import load_preferences
from sarm.data.responses import is_response_data, load_responses
from sarm.data.rows import prompt_hash
from sarm.errors import SarmInputError
from sarm.io import atomic_path, write_json
from sarm.reward.inference import RewardModel
from sarm.rl.drift import Drift, group_ids, share_drift

Terms = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]  # feature terms [n, F], residuals [n] or None, groups


def drift(
    model: str,
    samples: str,
    reference: str,
    output: str = "runs/drift",
    split: str = "train",
    threshold: float = 0.001,
    alpha: float = 0.05,
    resamples: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    plot_features: int = 20,
) -> dict:
    """Feature drift: flag features whose share of reward rose on the samples against the reference.

    Args:
        model: directory of an exported SARM (``sarm.json``; a residualized SARM too).
        samples: a file of ``prompt`` + ``response`` rows (policy samples).
        reference: a ``sarm cache`` directory of the model's backbone, a preference file, or ``prompt`` +
            ``response`` rows.
        output: directory for ``drift.json`` and ``drift.png``.
        split: the cache split read as the reference (``train``, ``val``, ``test``, ``all``); a file is read whole.
        threshold: τ, the rise of a share (a fraction of the reward's absolute mass) that matters.
        alpha: the family-wise level of the flags (Bonferroni over the tested features).
        resamples: bootstrap replicates.
        seed: the bootstrap's seed.
        batch_size: sequences per forward pass.
        device: ``cpu`` or ``cuda``.
        plot_features: features in the plot (the largest Δ).
    """
    if not 0 < alpha < 1:
        raise SarmInputError(f"alpha = {alpha}: expected a level between 0 and 1")
    if threshold < 0:
        raise SarmInputError(f"threshold = {threshold}: expected a rise ≥ 0")
    if resamples < 2:
        raise SarmInputError(f"resamples = {resamples}: a bootstrap needs at least 2")
    reward_model = RewardModel.load(model, device=device)
    if reward_model.config.get("kind") == "dense":
        raise SarmInputError(f"{model}: a dense reward model has no features to monitor")
    ref_terms, ref_residual, ref_groups = reference_terms(reward_model, reference, split, batch_size)
    new_terms, new_residual, new_groups = response_terms(reward_model, load_responses(samples), batch_size)
    result = share_drift(
        ref_terms, new_terms, ref_groups, new_groups, ref_residual, new_residual, threshold, alpha, resamples, seed
    )
    table = drift_table(result, reward_model.feature_head.weight.detach().flatten())
    summary = {
        "model": str(model),
        "reference": str(reference) + (f" (split {split})" if _is_cache(reference) else ""),
        "samples": str(samples),
        "reference_responses": len(ref_terms),
        "reference_prompts": int(ref_groups.max()) + 1,
        "sample_responses": len(new_terms),
        "sample_prompts": int(new_groups.max()) + 1,
        "threshold": threshold,
        "alpha": alpha,
        "resamples": resamples,
        "seed": seed,
        "tested_features": int(result.tested.sum()),
        "z": result.z,
        "flagged": [row["feature"] for row in table if row["flagged"]],
        "fell": [row["feature"] for row in table if row["fell"]],
        "features": table,
    }
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "drift.json", summary)
    write_plot(directory / "drift.png", table[:plot_features], threshold, Path(samples).name)
    flagged = ", ".join(f"f{r['feature']} (Δ {r['delta']:+.4f})" for r in table if r["flagged"])
    print(
        f"sarm: {summary['sample_responses']} samples vs {summary['reference_responses']} reference responses, "
        f"{summary['tested_features']} features tested at α = {alpha} (z = {result.z:.2f}), τ = {threshold}: "
        f"{len(summary['flagged'])} flagged{': ' + flagged if flagged else ''} -> {directory}",
        flush=True,
    )
    return summary


def drift_table(result: Drift, weights: torch.Tensor) -> list[dict]:
    """One row per tested feature, largest Δ first."""
    order = torch.sort(result.delta, descending=True, stable=True).indices
    return [
        {
            "feature": i,
            "weight": float(weights[i]),
            "share_reference": float(result.reference[i]),
            "share_samples": float(result.samples[i]),
            "delta": float(result.delta[i]),
            "se": float(result.se[i]),
            "lower": float(result.lower[i]),
            "upper": float(result.upper[i]),
            "flagged": bool(result.flagged[i]),
            "fell": bool(result.fell[i]),
        }
        for i in order.tolist()
        if result.tested[i]
    ]


def write_plot(path: Path, rows: list[dict], threshold: float, title: str) -> None:
    from sarm.report.plots import drift_bars

    uri = drift_bars(
        [r["feature"] for r in rows],
        [r["delta"] for r in rows],
        [r["lower"] for r in rows],
        [r["upper"] for r in rows],
        [r["flagged"] for r in rows],
        threshold,
        f"feature drift: {title}",
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(base64.b64decode(uri.split(",", 1)[1]))


def _is_cache(source: str) -> bool:
    return os.path.isdir(source) and os.path.isfile(os.path.join(source, "manifest.json"))


@torch.no_grad()
def reference_terms(reward_model: RewardModel, reference: str, split: str, batch_size: int) -> Terms:
    """The reference's feature terms, residuals and prompt ids: from a cache, a preference file or response rows."""
    if _is_cache(reference):
        return cache_terms(reward_model, reference, split)
    if is_response_data(reference):
        return response_terms(reward_model, load_responses(reference), batch_size)
    pairs = load_preferences(reference)
    prompts = [p.prompt for p in pairs]
    chosen = reward_model.score(prompts, [p.chosen for p in pairs], batch_size)
    rejected = reward_model.score(prompts, [p.rejected for p in pairs], batch_size)
    residual = None if chosen.residual is None else torch.cat([chosen.residual, rejected.residual])
    terms = feature_terms(reward_model, torch.cat([chosen.features, rejected.features]))
    return terms, residual, group_ids([p.prompt_id for p in pairs] * 2)


@torch.no_grad()
def response_terms(reward_model: RewardModel, rows: list, batch_size: int) -> Terms:
    """Feature terms, residuals and prompt ids (``prompt_id`` column, else the prompt) of ``prompt`` + ``response``
    rows (``sarm.data.responses.ResponseRow``)."""
    scores = reward_model.score([r.prompt for r in rows], [r.response for r in rows], batch_size)
    keys = [r.meta.get("prompt_id") or prompt_hash(r.prompt) for r in rows]
    return feature_terms(reward_model, scores.features), scores.residual, group_ids(keys)


def feature_terms(reward_model: RewardModel, z: torch.Tensor) -> torch.Tensor:
    """t_{s,i} = w_i z_{s,i} of pooled features ``[n, F]`` (``Scores.features``, on the CPU), computed where the head
    is and returned on the CPU."""
    return reward_model.feature_head.contributions(z.to(reward_model.device)).cpu()


@torch.no_grad()
def cache_terms(reward_model: RewardModel, cache: str, split: str) -> Terms:
    """Feature terms of a cache split's chosen and rejected responses from the cached hidden states, with the network
    the model scores with; the cache must hold the model's backbone layer."""
    from sarm.cache import PairActivationDataModule

    backbone = reward_model.config["backbone"]
    data = PairActivationDataModule(cache, batch_size=256, predict_split=split, pooling=reward_model.config["pooling"])
    manifest = data.cache.manifest
    if (manifest["model"], manifest["layer"]) != (backbone["model"], backbone["layer"]):
        raise SarmInputError(
            f"{cache}: cached from {manifest['model']} layer {manifest['layer']}, but the reward model reads "
            f"{backbone['model']} layer {backbone['layer']}"
        )
    network, parts = reward_model.network, {"terms": [], "residual": [], "pair": []}
    for batch in data.predict_dataloader():
        hidden, mask = batch["hidden"].float().to(reward_model.device), batch["mask"].to(reward_model.device)
        if reward_model.residualized:
            z, residual = network.parts(hidden, mask)
            parts["residual"].append(residual.cpu())
        else:
            z = network.features(hidden, mask)
        parts["terms"].append(reward_model.feature_head.contributions(z).cpu())
        parts["pair"].append(batch["pair"].repeat(2))  # rows: the batch's chosen sides, then its rejected sides
    pairs = data.cache.pairs
    ids = torch.cat(parts["pair"]).tolist()
    residual = torch.cat(parts["residual"]) if parts["residual"] else None
    return torch.cat(parts["terms"]), residual, group_ids([pairs[i]["prompt_id"] for i in ids])
