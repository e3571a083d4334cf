"""Planted-attribute recovery judged against what the backbone represents: the linear-probe ceiling.

An SAE can only recover what its backbone's hidden state encodes, so an absolute F1 bar fails an SAE for
the backbone's blind spots. Here every planted property (``sarm.sae.coverage.planted_labels``: per
response, "<attribute>:chosen", "<attribute>:rejected" and each distractor) is measured three ways, all on
the same responses of the cache's splits (which are by prompt: no prompt is in two splits):

    ceiling        F1 of a logistic probe on the pooled hidden state h (the SARM's own pooling: ``mean`` over
                   the response tokens or the ``last`` response token), standardized with the train split's
                   per-coordinate mean and std: the backbone's linear ceiling for the property
    single         F1 of one SAE latent as a classifier (the rule of ``sarm.sae.coverage``: active when above
                   a fraction t of its maximum, best t), the latent being the one with the best F1 on train
    single (any)   the best such F1 of any latent on test itself (``coverage``'s number: selected in-sample)
    k-sparse       SAEBench's sparse probing (Karvonen et al., arXiv 2503.09532): the k latents with the
                   largest |mean_{y=1} z_j − mean_{y=0} z_j| on train, standardized, under a logistic probe

Every probe (``fit_logistic``) is fitted on train, its L2 penalty λ chosen on val (best val F1 over
``L2_GRID``, ties to the larger λ), and its F1 reported on test, predicting y = 1 where σ(w · x + b) > 1/2.
F1 of predictions is the coverage rule with one column and t = 0 (``latent_f1``): 2 TP / (predicted + actual).

Class balance. A planted property is often rare (one attribute's side is a few percent of the responses).
Fitted to the raw class mix, a probe whose input separates the classes only partly learns the prior: with
P(y = 1) = 5 % and a likelihood ratio below 19 everywhere, σ(w · x + b) stays under 1/2 for every input, and
it predicts no positive at all (F1 0), though its input does tell the classes apart. SAEBench's sparse
probing (Karvonen et al. 2025, arXiv 2503.09532, ``prepare_probe_data``) trains and tests on balanced sets,
drawing as many negatives as there are positives. Here every probe, the dense ceiling and the k-sparse ones
alike, is fitted with class weights instead (``fit_logistic(balanced=True)``: each class carries half the
loss, ½ mean_{y=1} ℓ + ½ mean_{y=0} ℓ): the same objective as SAEBench's subsampled set in expectation, but
deterministic and wasting no train response. The cut-off 1/2 then means "more like the positives than the
negatives", not "more likely than not at this prevalence". Val and test keep their natural class mix: F1 is
read where the property is as rare as it is in the data. The k-sparse selection (SAEBench's rule; k-sparse
probing after Gao et al. 2024, arXiv 2406.04093) needs no balancing: a difference of class means does not
depend on how many responses each class has, and it reads train only.

    ratio      = F1 / ceiling F1              (single, 1-sparse, 5-sparse)
    verdict    = "not represented"            if ceiling F1 < ``REPRESENTED``   (the backbone, not the SAE)
                 "pass"                       if single ratio ≥ ``RECOVERED``
                 "fail"                       otherwise
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from sarm.data.splits import SPLITS
from sarm.reward.fit import fit_logistic
from sarm.reward.network import RewardNetwork
from sarm.reward.pooling import pool
from sarm.sae.coverage import latent_f1, planted_labels

L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)  # strongest first: ties keep the stronger penalty
SPARSE_K = (1, 5)
REPRESENTED = 0.8  # ceiling F1 from which the backbone counts as encoding the property
RECOVERED = 0.9  # single-feature share of the ceiling that counts as recovered


def probe_splits(pairs: list[dict]) -> dict[str, torch.Tensor]:
    """Pair indices per split, from the cache rows' ``split``; refuses a prompt in two splits (a probe
    judged on a prompt it was fitted on would leak)."""
    where: dict[str, str] = {}
    index: dict[str, list[int]] = {split: [] for split in SPLITS}
    for i, row in enumerate(pairs):
        split, prompt = row["split"], row.get("prompt_id")
        if prompt is not None and where.setdefault(prompt, split) != split:
            raise ValueError(f"prompt {prompt!r} is in the {where[prompt]} and {split} splits: a probe would leak")
        if split in index:
            index[split].append(i)
    return {split: torch.tensor(ids, dtype=torch.long) for split, ids in index.items()}


@torch.no_grad()
def collect_response_features(network: RewardNetwork, data, pairs: torch.Tensor, batch_size: int = 128) -> dict:
    """``latents`` (the SARM's pooled features) and ``hidden`` (the same pooling of the hidden state), one
    row per response in ``planted_labels`` order: 2j chosen, 2j + 1 rejected of the j-th pair of ``pairs``.

    Args:
        network: the SARM network.
        data: a ``PairActivationDataModule`` over the cache (its ``collate``).
        pairs: pair indices.
    """
    data.take_pooling(network.pooling)
    network = network.eval()
    latents, hidden = [], []
    for batch in DataLoader(pairs.tolist(), batch_size=batch_size, collate_fn=data.collate):
        z = network.features(batch["hidden"].float(), batch["mask"])
        h = pool(batch["hidden"].float(), batch["mask"], network.pooling, lambda x: x)
        n = z.shape[0] // 2  # rows [0, n) chosen, [n, 2n) rejected: interleave to 2j, 2j + 1
        latents.append(torch.stack([z[:n], z[n:]], 1).reshape(2 * n, -1))
        hidden.append(torch.stack([h[:n], h[n:]], 1).reshape(2 * n, -1))
    return {"latents": torch.cat(latents), "hidden": torch.cat(hidden)}


def f1_score(predicted: torch.Tensor, label: torch.Tensor) -> float:
    """F1 of bool predictions: ``latent_f1``'s rule on one 0/1 column at t = 0."""
    return float(latent_f1(predicted.float()[:, None], label, thresholds=(0.0,))[0])


def standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-split mean and std per coordinate (std floored: constant coordinates stay 0, not NaN)."""
    return x.mean(0), x.std(0).clamp_min(1e-6)


def fit_probe(
    x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], grid: tuple[float, ...] = L2_GRID, balanced: bool = True
) -> dict:
    """A logistic probe fitted on ``x["train"]``, λ chosen on val, F1 on test (module docstring).

    Only ``y["train"]`` and ``y["val"]`` reach the fit and the choice of λ; ``y["test"]`` is read once, by the
    final F1. Inputs are standardized with the train split's statistics. ``balanced``: class-weighted fit
    (module docstring, "Class balance"); False fits the raw class mix (kept to show what balancing changes).
    Returns ``f1``, ``f1_val``, ``l2``, ``fit`` and ``predicted`` (the test predictions, bool).
    """
    mean, std = standardizer(x["train"])
    z = {split: (x[split].float() - mean) / std for split in SPLITS}
    best = None
    for l2 in grid:
        fit = fit_logistic(z["train"], y["train"], l2=l2, balanced=balanced)
        f1_val = f1_score(fit.logits(z["val"]) > 0, y["val"])
        if best is None or f1_val > best[0]:
            best = (f1_val, l2, fit)
    f1_val, l2, fit = best
    predicted = fit.logits(z["test"]) > 0
    return {"f1": f1_score(predicted, y["test"]), "f1_val": f1_val, "l2": l2, "fit": fit, "predicted": predicted}


def top_mean_difference(z: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k latents with the largest |mean over y of z_j − mean over not-y of z_j| (SAEBench's selection; class
    means, so the class mix does not matter)."""
    difference = z[y].float().mean(0) - z[~y].float().mean(0)
    return difference.abs().topk(k).indices


def probe_property(
    latents: dict[str, torch.Tensor], hidden: dict[str, torch.Tensor], y: dict[str, torch.Tensor]
) -> dict:
    """Ceiling, single-latent and k-sparse F1 of one property, their ratios and the verdict (module docstring).

    Args:
        latents, hidden, y: split → ``[N_split, n_latents]``, ``[N_split, d]``, bool ``[N_split]``.
    """
    ceiling = fit_probe(hidden, y)
    # the single latent: chosen by its F1 on train; its test F1 under the same rule
    chosen = int(latent_f1(latents["train"], y["train"]).argmax())
    single = float(latent_f1(latents["test"][:, chosen : chosen + 1], y["test"])[0])
    every = latent_f1(latents["test"], y["test"])
    row = {
        "support_test": int(y["test"].sum()),
        "ceiling_f1": ceiling["f1"],
        "ceiling_l2": ceiling["l2"],
        "single_latent": chosen,
        "single_f1": single,
        "single_any_latent": int(every.argmax()),
        "single_any_f1": float(every.max()),
    }
    for k in SPARSE_K:
        selected = top_mean_difference(latents["train"], y["train"], k)
        sparse = fit_probe({split: latents[split][:, selected] for split in SPLITS}, y)
        row[f"sparse{k}_latents"] = selected.tolist()
        row[f"sparse{k}_f1"] = sparse["f1"]
    for name in ("single", "single_any", *(f"sparse{k}" for k in SPARSE_K)):
        row[f"{name}_ratio"] = row[f"{name}_f1"] / ceiling["f1"] if ceiling["f1"] > 0 else None
    row["verdict"] = verdict(row["ceiling_f1"], row["single_ratio"])
    return row


def verdict(ceiling_f1: float, single_ratio: float | None) -> str:
    if ceiling_f1 < REPRESENTED:
        return "not represented"
    return "pass" if single_ratio is not None and single_ratio >= RECOVERED else "fail"


def planted_probes(network: RewardNetwork, data, pairs: list[dict]) -> dict:
    """Every planted property's row (``probe_property``) over the cache's train / val / test splits.

    Args:
        network: the SARM network.
        data: a ``PairActivationDataModule`` over the planted cache.
        pairs: the cache's ``pairs.jsonl`` rows.

    Returns:
        {"pooling", "responses": split → count, "properties": name → row}; a property with no positive (or
        no negative) response in train or val is left out (no probe can be fitted or chosen).
    """
    index = probe_splits(pairs)
    features = {split: collect_response_features(network, data, index[split]) for split in SPLITS}
    labels = {split: planted_labels([pairs[int(i)] for i in index[split]]) for split in SPLITS}
    names = sorted(set().union(*(labels[split] for split in SPLITS)))
    properties = {}
    for name in names:
        y = {split: labels[split].get(name, torch.zeros(2 * len(index[split]), dtype=torch.bool)) for split in SPLITS}
        if any(not y[split].any() or y[split].all() for split in ("train", "val")):
            continue
        properties[name] = probe_property(
            {split: features[split]["latents"] for split in SPLITS},
            {split: features[split]["hidden"] for split in SPLITS},
            y,
        )
    return {
        "pooling": network.pooling,
        "responses": {split: 2 * len(index[split]) for split in SPLITS},
        "properties": properties,
    }
