"""An attribution directory: what ``RewardAttribution`` writes, and what ``sarm report`` reads back instead of
scoring the pairs again.

    features.csv, features.json   one row per active feature, ranked by |mean margin contribution| (``RANKING``):
                                  rank (1 first), feature, weight, abs_mean_margin_contribution (the key),
                                  mean_margin_contribution (signed), ... (``sarm.attribution.contributions``);
                                  features.json also holds the summary and names the ranking
    pairs.csv                     pair, chosen_reward, rejected_reward, margin, correct: one line per pair, by pair id
    summary.json                  pairs, accuracy, mean_margin, active_features, head_nonzero, ranking, top_m_share,
                                  feature_share (a residualized SARM's: Σ_p|a_p| / (Σ_p|a_p| + Σ_p|b_p|)),
                                  (m → mean share of a pair's |c_i| its own m largest terms carry) and, for a val
                                  or test split, legibility (``sarm.attribution.legibility.legibility_curve``)
    contributions.safetensors     per pair, P pairs in ascending pair id:
        pair            [P] int64      the pair's index in the dataset (its cache)
        subset          [P] int64      its subset id (index into the cache's subset names; −1: none)
        chosen_reward   [P]            r_chosen, and rejected_reward [P]: r_rejected
        residual        [P]            a residualized SARM's residual margin term b_p (0 for a SARM): the margin is
                                       Σ_i c_i + residual
        features        [T] int64      the top T features in rank order: the first T rows of features.csv
        contributions   [P, T]         their margin terms c_i = w_i z_i^chosen − w_i z_i^rejected
        terms_feature   [P, K] int64   each pair's K largest |c_i| over all features, largest first (its waterfall),
        terms_value     [P, K]         and those c_i (0 where the pair has fewer than K non-zero terms)
        share_<m>       [P]            the share of the pair's Σ|c_i| its own m largest terms carry (m = 5, 10, 20, 50)

Zeroing feature f changes every margin by exactly −c_f, so steering tables need nothing more.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from sarm.attribution.contributions import RANKING
from sarm.errors import SarmInputError
from sarm.files import Tensors, read_json_object, read_tensors
from sarm.io import atomic_path, save_tensors, write_json, write_text

CONTRIBUTIONS = "contributions.safetensors"
PAIR_TENSORS = (
    "pair",
    "subset",
    "chosen_reward",
    "rejected_reward",
    "residual",
    "contributions",
    "terms_feature",
    "terms_value",
)


@dataclass
class Attribution:
    """An attribution directory, read back (``read_attribution``); tensors as in the module docstring."""

    summary: dict
    features: list[dict]  # the features.json rows, ranked
    pair: torch.Tensor
    subset: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor
    residual: torch.Tensor  # [P] the residual margin term (0 for a SARM, and in files from before it existed)
    top: torch.Tensor  # the file's ``features``: the top T features in rank order
    contributions: torch.Tensor
    terms_feature: torch.Tensor
    terms_value: torch.Tensor

    @property
    def margin(self) -> torch.Tensor:
        return self.chosen_reward - self.rejected_reward


def write_tables(directory: Path, rows: list[dict], summary: dict) -> None:
    """features.csv/json and summary.json (``rows`` ranked)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_text(directory / "features.csv", _csv(rows))
    write_json(directory / "features.json", {"ranking": RANKING, "summary": summary, "features": rows})
    write_json(directory / "summary.json", summary)


def write_pairs(directory: Path, pairs: dict[str, torch.Tensor], top: torch.Tensor) -> None:
    """pairs.csv and contributions.safetensors from ``pairs`` (``PAIR_TENSORS``, in any pair order)."""
    order = pairs["pair"].argsort()
    pairs = {k: v[order].contiguous() for k, v in pairs.items()}
    ids, chosen, rejected = (pairs[k].tolist() for k in ("pair", "chosen_reward", "rejected_reward"))
    with atomic_path(directory / "pairs.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)  # row by row: one line per pair of the dataset
        writer.writerow(["pair", "chosen_reward", "rejected_reward", "margin", "correct"])
        for p, c, r in zip(ids, chosen, rejected, strict=True):
            writer.writerow([int(p), c, r, c - r, c > r])
    save_tensors(directory / CONTRIBUTIONS, {**pairs, "features": top.long()}, metadata={"ranking": RANKING})


def read_attribution(directory: str | Path) -> Attribution:
    """The attribution directory ``directory``, every tensor checked for presence, shape and dtype."""
    directory = Path(directory)
    hint = "written by the RewardAttribution callback (sarm attribute); an older or incomplete run?"
    table = read_json_object(directory / "features.json", missing=hint)
    if not isinstance(table.get("summary"), dict) or not isinstance(table.get("features"), list):
        raise SarmInputError(f"{directory / 'features.json'}: expected 'summary' and 'features' ({hint})")
    tensors = read_tensors(directory / CONTRIBUTIONS, missing=hint)
    pair = _integers(tensors, "pair", (None,))
    top = _integers(tensors, "features", (None,))
    n, t = pair.shape[0], top.shape[0]
    terms = _integers(tensors, "terms_feature", (n, None))
    return Attribution(
        summary=table["summary"],
        features=table["features"],
        pair=pair,
        subset=_integers(tensors, "subset", (n,)),
        chosen_reward=tensors.get("chosen_reward", (n,)),
        rejected_reward=tensors.get("rejected_reward", (n,)),
        residual=tensors.get("residual", (n,)) if "residual" in tensors else torch.zeros(n),
        top=top,
        contributions=tensors.get("contributions", (n, t)),
        terms_feature=terms,
        terms_value=tensors.get("terms_value", tuple(terms.shape)),
    )


def _integers(tensors: Tensors, name: str, shape: tuple) -> torch.Tensor:
    """``tensors.get`` for integer tensors (pair ids, feature ids), which it does not check."""
    if name not in tensors:
        raise tensors.error(name, "missing")
    tensor = tensors.tensors[name]
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise tensors.error(name, f"dtype {str(tensor.dtype).removeprefix('torch.')}, expected integers")
    if tensor.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, tensor.shape, strict=True)):
        expected = ["?" if n is None else n for n in shape]
        raise tensors.error(name, f"shape {list(tensor.shape)}, expected {expected}")
    return tensor


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
