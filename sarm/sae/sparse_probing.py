"""k-sparse probing of an SAE's latents on the responses of an activation cache (SAEBench's sparse probing,
Karvonen et al. 2025, arXiv 2503.09532; after Gao et al. 2024, arXiv 2406.04093).

Each response is one row: its SAE latents at its last token (``pooling="last"``, where SARM's default head reads a
response, and one encode per response) or mean-pooled over its cached response tokens (``"mean"``, as SAEBench
pools). For a binary property y and k ∈ ``SPARSE_K`` (1, 5):

    selected = the k latents with the largest |mean_{y} z_j − mean_{not y} z_j| on the train split
    F1_k     = test F1 of a balanced logistic probe on those k latents (fit on train, λ on val)

both by ``sarm.attribution.probes`` (``top_mean_difference``, ``fit_probe``), the rules ``sarm recovery`` uses.
Splits are the cache's, by prompt (``probe_splits``): no prompt is in two splits. Properties:

    planted data    ``planted_labels``: each deciding attribute's chosen and rejected sides, each distractor
    any preference  ``chosen``: the response is its pair's chosen one (on RewardBench 2 safety, a safe
    data           response against an unsafe one to the same prompt)
"""

from __future__ import annotations

import torch

from sarm.attribution.probes import SPARSE_K, SPLITS, fit_probe, probe_splits, top_mean_difference
from sarm.cache import ActivationCache
from sarm.sae.base import SparseAutoencoder


@torch.no_grad()
def pooled_latents(
    sae: SparseAutoencoder, cache: ActivationCache, pooling: str = "last", batch_sequences: int = 128
) -> torch.Tensor:
    """``[num_sequences, n_latents]``: each sequence's latents at its last token, or (``pooling="mean"``) averaged
    over its cached response tokens (sequence 2i is pair i's chosen response, 2i + 1 its rejected one; a sequence
    without response tokens is all zeros under "mean")."""
    sae = sae.eval()
    if pooling == "last":
        return torch.cat([sae.encode(rows.float()) for rows in cache.last_token_activations().split(1024)])
    if pooling != "mean":
        raise ValueError(f"pooling = {pooling!r}: expected 'last' or 'mean'")
    n = cache.manifest["num_sequences"]
    pooled = torch.zeros(n, sae.n_latents)
    for start in range(0, n, batch_sequences):
        sequences = torch.arange(start, min(start + batch_sequences, n))
        hidden, mask = cache.response_tokens(sequences)
        latents = sae.encode(hidden.float()) * mask[..., None]
        pooled[sequences] = latents.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    return pooled


def response_splits(pairs: list[dict]) -> dict[str, torch.Tensor]:
    """Response (sequence) indices per split: 2i and 2i + 1 for each pair i of the split."""
    return {split: torch.stack([2 * ids, 2 * ids + 1], 1).flatten() for split, ids in probe_splits(pairs).items()}


def chosen_labels(pairs: list[dict]) -> dict[str, torch.Tensor]:
    """``{"chosen": bool [2 · len(pairs)]}``: True on each pair's chosen response."""
    return {"chosen": torch.arange(2 * len(pairs)) % 2 == 0}


def sparse_probing(
    features: torch.Tensor, labels: dict[str, torch.Tensor], splits: dict[str, torch.Tensor], ks=SPARSE_K
) -> dict:
    """Test F1 of k-sparse probes per property (module docstring).

    Args:
        features: ``[N, n_latents]`` one row per response.
        labels: property → bool ``[N]``.
        splits: split → row indices.
        ks: the probe sizes.

    Returns:
        {"properties": name → {"sparse<k>_f1", "sparse<k>_latents"}, "mean": {"sparse<k>_f1": mean over the
        properties}}; a property without both classes in train and val is left out.
    """
    properties = {}
    for name, label in labels.items():
        y = {split: label[splits[split]] for split in SPLITS}
        if any(not y[split].any() or y[split].all() for split in ("train", "val")):
            continue
        x = {split: features[splits[split]] for split in SPLITS}
        row = {}
        for k in ks:
            selected = top_mean_difference(x["train"], y["train"], k)  # train labels only
            probe = fit_probe({split: x[split][:, selected] for split in SPLITS}, y)
            row[f"sparse{k}_f1"] = probe["f1"]
            row[f"sparse{k}_latents"] = selected.tolist()
        properties[name] = row
    mean = {
        f"sparse{k}_f1": sum(row[f"sparse{k}_f1"] for row in properties.values()) / len(properties)
        if properties
        else None
        for k in ks
    }
    return {"properties": properties, "mean": mean}
