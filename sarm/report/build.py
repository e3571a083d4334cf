"""``sarm report``: everything a reader needs to see why a SARM prefers what it prefers.

For one or two preference datasets, through the trained SARM:

1. attribution (``sarm.attribution``): per-feature contributions to chosen, rejected and margin, over
   the pairs of ``split`` (the dataset is cached with the SARM's backbone settings first); one predict
   pass per dataset, whose ``RewardAttribution`` files are all the report reads (``sarm.attribution.store``);
2. the top features by |mean margin contribution| (the attribution tables' one ranking rule, so the
   report's top features are the first rows of ``features.csv``), each with its per-pair contributions,
   an explanation and its top-activating contexts (``sarm.explain``, stored per SAE feature);
3. per-pair waterfalls for the most confident and the most misranked pairs;
4. steering: each top feature zeroed in turn, accuracy and margin before and after (exact from the
   per-pair contributions: margin' = margin − c_f);
5. a 2-D map of the top features (PCA of their decoder directions) and, for two datasets, which
   features matter more in one than in the other.

The content (``sarm.report.schema.Report``) is rendered by ``sarm.report.html`` into one self-contained HTML file.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from sarm.attribution import attribute_dataset, load_sarm, read_attribution, zeroing_effect
from sarm.cache import ActivationCache
from sarm.errors import SarmInputError
from sarm.explain import Context, Explanation, explain_features
from sarm.io import file_name
from sarm.report.html import render_report
from sarm.report.schema import (
    Comparison,
    ComparisonRow,
    Dataset,
    FeatureMap,
    FeaturePage,
    Legibility,
    Model,
    Pair,
    Report,
    Steering,
    Term,
    TopFeature,
)
from sarm.reward.export import SAE_DIR


def report(
    sarm: str,
    data: list[str],
    num_pairs: int = 2000,
    seed: int = 0,
    split: str = "test",
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    cache_dirs: list[str] | None = None,
    output: str = "runs/report",
    top: int = 10,
    contexts: int = 8,
    explain_method: str = "offline",
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    steer_top: int = 5,
    batch_size: int = 256,
    dtype: str | None = None,
) -> Path:
    """Build the HTML report of a trained SARM over one or two preference datasets.

    Args:
        sarm: directory of an exported head-only SARM (``sarm.json``).
        data: one or two preference files / ``builtin:planted`` / hub datasets.
        num_pairs: pairs to generate, for ``builtin:planted``.
        seed: generator seed, for ``builtin:planted``.
        split: ``train``, ``val``, ``test`` (by prompt) or ``all``.
        split_fractions: train/val/test fractions of the by-prompt split.
        split_seed: seed of the split.
        cache_dirs: activation caches to use or create, one per dataset (default: under $SARM_CACHE).
        output: directory of ``report.html``, ``report.json`` and the attribution tables.
        top: features shown per dataset.
        contexts: top-activating contexts shown per feature.
        explain_method: ``offline`` (n-grams over-represented where a feature fires) or ``llm``.
        llm_base_url: OpenAI-compatible endpoint, for ``explain_method: llm``.
        llm_model: model name at that endpoint.
        steer_top: how many top features are zeroed, one at a time, in the steering table.
        batch_size: pairs per batch.
        dtype: storage dtype of new caches; default: that of an existing cache in ``cache_dirs``, else bfloat16.
    """
    data = list(data)
    if not 1 <= len(data) <= 2:
        raise SarmInputError(f"data: give one or two datasets, got {len(data)}")
    if cache_dirs is not None and len(cache_dirs) != len(data):
        raise SarmInputError(f"cache_dirs: one per dataset ({len(data)}), got {len(cache_dirs)}")
    model, config = load_sarm(sarm)  # restored once; each dataset gets one predict pass through it
    output_dir = Path(output)
    datasets, caches = [], []
    for i, source in enumerate(data):
        name = _name(source, i, data)
        attributed = attribute_dataset(
            model,
            config,
            source,
            num_pairs=num_pairs,
            seed=seed,
            split=split,
            split_fractions=split_fractions,
            split_seed=split_seed,
            output=str(output_dir / "attribution" / name),
            cache_dir=None if cache_dirs is None else cache_dirs[i],
            batch_size=batch_size,
            top=top,
            dtype=dtype,
        )
        cache_dir = attributed["cache"]
        caches.append(cache_dir)
        datasets.append(_dataset(name, cache_dir, Path(attributed["output"]), steer_top))

    features = list(dict.fromkeys(f.feature for ds in datasets for f in ds.features))
    explained = explain_features(
        caches[0],
        str(Path(sarm) / SAE_DIR),
        features,
        method=explain_method,
        k=contexts,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        activate=_activation_probe(sarm) if explain_method == "llm" else None,
    )
    weight = model.head.weight.detach()  # the features' head (a residualized SARM's too)
    pages = [
        FeaturePage(
            f,
            float(weight[f]),
            Explanation.from_dict(explained[f]["explanation"]),
            [Context(**c) for c in explained[f]["contexts"][:contexts]],
        )
        for f in features
    ]
    content = Report(
        title=f"SARM report: {Path(sarm).name}",
        model=Model(
            path=str(sarm),
            kind=config["kind"],
            backbone=config["backbone"],
            n_features=config["n_features"],
            head_nonzero=config.get("head_nonzero"),
            pooling=config["pooling"],
        ),
        datasets=datasets,
        feature_pages=pages,
        feature_map=_feature_map(model.sae, features, datasets[0]),
        comparison=_comparison(datasets, features) if len(datasets) == 2 else None,
    )
    path = render_report(content, output_dir)
    print(f"sarm: report written to {path}", flush=True)
    return path


def _name(source: str, i: int, data: list[str]) -> str:
    name = file_name(Path(source).stem if Path(source).suffix else source)
    return name if [Path(d).stem for d in data].count(Path(source).stem) == 1 else f"{name}-{i + 1}"


def _dataset(name: str, cache_dir: str, attribution_dir: Path, steer_top: int) -> Dataset:
    """One dataset's section, from its attribution directory (``RewardAttribution``'s files) and its cache's texts."""
    cache = ActivationCache(cache_dir)
    attribution = read_attribution(attribution_dir)
    chosen, rejected, margins = attribution.chosen_reward, attribution.rejected_reward, attribution.margin
    per_pair = attribution.contributions  # [P, top]: the top features' terms, columns in rank order
    ranked = attribution.top.tolist()  # the first rows of features.csv: one ranking rule for both
    table = {row["feature"]: row for row in attribution.features}
    columns = {f.name for f in fields(TopFeature)}
    features = [
        TopFeature(**{k: v for k, v in table[f].items() if k in columns}, contributions=per_pair[:, j].tolist())
        for j, f in enumerate(ranked)
    ]

    residualized = "feature_share" in attribution.summary  # a residualized SARM: the residual is its own term
    pairs = cache.pairs
    selected = []
    order = margins.argsort()
    picks = [("most confident", int(order[-1])), ("second most confident", int(order[-2]))]
    picks += [("misranked" if margins[i] < 0 else "least confident", int(i)) for i in order[:2].tolist()]
    for label, row in picks:
        record = pairs[int(attribution.pair[row])]
        terms = zip(attribution.terms_feature[row].tolist(), attribution.terms_value[row].tolist())  # largest first
        selected.append(
            Pair(
                pair=record["index"],
                label=label,
                prompt=_text(record["prompt"]),
                chosen=record["chosen"],
                rejected=record["rejected"],
                chosen_reward=float(chosen[row]),
                rejected_reward=float(rejected[row]),
                contributions=[Term(f, v) for f, v in terms if v != 0],
                residual=float(attribution.residual[row]) if residualized else None,
            )
        )

    steering = [
        Steering(feature=f, **zeroing_effect(margins, per_pair[:, j : j + 1], [f]))
        for j, f in enumerate(ranked[:steer_top])
    ]
    names, subset = cache.columns.subset_names, attribution.subset  # the batches' subset ids
    subsets = {n: float((margins[subset == i] > 0).float().mean()) for i, n in enumerate(names) if (subset == i).any()}
    return Dataset(
        name=name,
        n_pairs=int(margins.numel()),
        accuracy=float((margins > 0).float().mean()),
        mean_margin=float(margins.mean()),
        chosen_rewards=chosen.tolist(),
        rejected_rewards=rejected.tolist(),
        subsets=subsets,
        features=features,
        pairs=selected,
        steering=steering,
        legibility=_legibility(attribution.summary.get("legibility")),
        feature_share=attribution.summary.get("feature_share"),
    )


def _legibility(curve: dict | None) -> Legibility | None:
    if curve is None:
        return None
    keys = ("split", "ms", "accuracy", "refit_accuracy", "share", "n_features")
    return Legibility(**{k: curve[k] for k in keys}, dense_accuracy=curve.get("dense_accuracy"))


def _text(prompt: list[dict]) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _feature_map(sae, features: list[int], dataset: Dataset) -> FeatureMap | None:
    """The top features' decoder directions projected on their first two principal components."""
    if len(features) < 3:
        return None
    directions = torch.nn.functional.normalize(sae.W_dec.detach()[features].double(), dim=1)
    centered = directions - directions.mean(0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    xy = centered @ v[:2].T
    contribution = {row.feature: row.mean_margin_contribution or 0.0 for row in dataset.features}
    return FeatureMap(
        features=features,
        x=xy[:, 0].tolist(),
        y=xy[:, 1].tolist(),
        margin_contribution=[float(contribution.get(f, 0.0)) for f in features],
        method="PCA of the features' unit decoder directions",
    )


def _comparison(datasets: list[Dataset], features: list[int]) -> Comparison:
    """Mean margin contribution of each top feature in both datasets, largest difference first."""
    a, b = (
        {row.feature: float(sum(row.contributions) / max(len(row.contributions), 1)) for row in ds.features}
        for ds in datasets
    )
    rows = [ComparisonRow(f, a.get(f, 0.0), b.get(f, 0.0), a.get(f, 0.0) - b.get(f, 0.0)) for f in features]
    rows.sort(key=lambda r: abs(r.difference), reverse=True)
    return Comparison(a=datasets[0].name, b=datasets[1].name, rows=rows)


def _activation_probe(sarm: str):
    """``activate(texts, feature)``: the feature's max activation over each text's tokens, read as an
    assistant response through the SARM's own backbone and SAE (for the LLM explainer's tests)."""
    from sarm.reward.inference import RewardModel

    model = RewardModel.load(sarm)

    @torch.no_grad()
    def activate(texts: list[str], feature: int) -> list[float]:
        hidden, mask = model.hidden_states([[] for _ in texts], texts)
        latents = model.network.sae(hidden).latents[..., feature] * mask
        return latents.max(-1).values.tolist()

    return activate
