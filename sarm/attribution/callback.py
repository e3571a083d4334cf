"""``RewardAttribution``: per-feature reward attribution over every pair of a validate/test/predict loop.

Per batch it adds each pair's margin terms c_i = w_i z_i^chosen − w_i z_i^rejected to the per-feature sums
(``FeatureAttributionSums``) and records the pair: rewards, subset, its waterfall (largest |c_i|) and its non-zero
c_i. At the loop's end the features are ranked by |mean margin contribution| (``rank_features``), and the files of
``sarm.attribution.store`` are written: the tables, and per pair the c_i of the top features, which is all
``sarm report`` reads.

Under DDP the sums are torchmetrics states reduced with ``sum`` and the per-pair records are gathered from every
rank, so a multi-process run gives the numbers of a single process; files are written by global rank 0 only.
"""

from __future__ import annotations

import tempfile
from array import array
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.utilities.distributed import gather_all_tensors

from sarm.attribution.contributions import RANK_COLUMN, RANKING, FeatureAttributionSums, largest_terms, rank_features
from sarm.attribution.legibility import describe, pair_shares
from sarm.attribution.store import write_pairs, write_tables

PER_FEATURE = (
    RANK_COLUMN,
    "mean_margin_contribution",
    "mean_chosen_contribution",
    "mean_rejected_contribution",
    "freq_chosen",
    "freq_rejected",
    "sign_agreement",
    "margin_share",
)


SHARE_MS = (5, 10, 20, 50)  # the m's of the per-pair top-m share in summary.json


class PairRecords:
    """One rank's per-pair records of a loop.

    Rewards, pair and subset ids and waterfall terms are a few numbers per pair, kept in ``array`` buffers (not a
    tensor per batch: thousands of small long-lived tensors fragment the heap under the batches' large
    temporaries). Every pair's non-zero c_i go to an anonymous temporary file, batch by batch, and are read back
    once for the top features only: memory stays flat in the number of features a dataset activates.
    """

    def __init__(self, n_features: int, terms: int):
        self.n_features, self.terms = n_features, min(terms, n_features)
        self.columns = {
            "pair": array("q"),
            "subset": array("q"),
            "chosen_reward": array("f"),
            "rejected_reward": array("f"),
            "residual": array("f"),
            "terms_feature": array("q"),
            "terms_value": array("f"),
            **{f"share_{m}": array("f") for m in SHARE_MS},
        }
        self.spill = tempfile.TemporaryFile()
        self.count = 0

    def add(
        self,
        outputs: dict,
        subset: torch.Tensor | None,
        contributions: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> None:
        """One batch's pairs: ``contributions`` [n, features] their c_i, ``residual`` [n] a residualized SARM's
        residual margin terms (None: a SARM, 0)."""
        n = contributions.shape[0]
        residual = torch.zeros(n, device=contributions.device) if residual is None else residual
        shares = pair_shares(contributions.detach(), SHARE_MS)
        feature, value = largest_terms(contributions.detach(), self.terms)
        subset = torch.full((n,), -1) if subset is None else subset
        for name, tensor in (
            ("pair", outputs["pair"]),
            ("subset", subset),
            ("chosen_reward", outputs["chosen_reward"]),
            ("rejected_reward", outputs["rejected_reward"]),
            ("residual", residual),
            ("terms_feature", feature),
            ("terms_value", value),
            *((f"share_{m}", shares[:, j]) for j, m in enumerate(SHARE_MS)),
        ):
            column = self.columns[name]
            column.frombytes(tensor.detach().cpu().numpy().astype(_dtype(column)).tobytes())
        rows, cols = contributions.nonzero(as_tuple=True)
        values = contributions[rows, cols]
        self.spill.write(np.array([n, rows.numel()], dtype=np.int64).tobytes())
        for part, dtype in ((rows, np.int32), (cols, np.int32), (values, np.float32)):
            self.spill.write(part.detach().cpu().numpy().astype(dtype).tobytes())
        self.count += n

    def tensors(self, top: torch.Tensor) -> dict[str, torch.Tensor]:
        """This rank's pairs, in the order seen, with ``contributions`` [pairs, len(top)]: the c_i of ``top``."""
        out = {name: torch.from_numpy(np.array(column, dtype=_dtype(column))) for name, column in self.columns.items()}
        for name in ("terms_feature", "terms_value"):
            out[name] = out[name].reshape(self.count, self.terms)
        column = torch.full((self.n_features,), -1, dtype=torch.long)
        column[top] = torch.arange(len(top))
        dense = torch.zeros(self.count, len(top))
        self.spill.seek(0)
        offset = 0
        while header := self.spill.read(16):
            n, nnz = np.frombuffer(header, dtype=np.int64).tolist()
            rows, cols = (
                torch.from_numpy(np.frombuffer(self.spill.read(4 * nnz), dtype=np.int32).astype(np.int64))
                for _ in range(2)
            )
            values = torch.from_numpy(np.frombuffer(self.spill.read(4 * nnz), dtype=np.float32).copy())
            keep = column[cols] >= 0
            dense[offset + rows[keep], column[cols[keep]]] = values[keep]
            offset += n
        out["contributions"] = dense
        return out

    def close(self) -> None:
        self.spill.close()


def _dtype(column: array):
    return np.int64 if column.typecode == "q" else np.float32


def _gathered(tensor: torch.Tensor, device) -> torch.Tensor:
    """Every rank's rows, in rank order (the same order for every column, so a pair's columns stay aligned)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return torch.cat(gather_all_tensors(tensor.to(device))).cpu()


class RewardAttribution(L.Callback):
    """Accumulates per-feature reward attribution in validate/test/predict and writes it out (``store``).

    Features are ranked by |mean margin contribution| (``RANKING``, see ``rank_features``); the signed mean
    is a column. The module's step must return ``z_chosen``, ``z_rejected`` (features), ``chosen_reward``,
    ``rejected_reward`` and ``pair``, and expose the head as ``pl_module.head``; a batch's ``subset`` is
    recorded when it has one.

    Args:
        output_dir: where ``features.csv/json``, ``pairs.csv``, ``summary.json`` and ``contributions.safetensors``
            go (rank 0).
        top: how many top features to print and log, and to keep per-pair contributions of.
        stages: which loops to attribute: any of ``validate``, ``test``, ``predict``.
        terms: each pair's largest terms kept for its waterfall.
        legibility: a ``legibility_curve`` of the model on the attributed split, written to ``summary.json`` as
            ``legibility`` and printed (it reads the train split too, so the caller computes it).
    """

    def __init__(
        self,
        output_dir: str = "runs/attribution",
        top: int = 10,
        stages: tuple[str, ...] = ("test", "predict"),
        terms: int = 8,
        legibility: dict | None = None,
    ):
        super().__init__()
        self.output_dir, self.top, self.stages, self.terms = Path(output_dir), top, tuple(stages), terms
        self.legibility = legibility
        self.residualized = False  # the model has a residual term (sarm.reward.residual_sarm), seen in the loop
        self.sums: FeatureAttributionSums | None = None
        self.records: PairRecords | None = None
        self.result: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.sums = FeatureAttributionSums(pl_module.head.weight.numel()).to(pl_module.device)

    def _reset(self, *args) -> None:
        self.sums.reset()
        self.residualized = False
        if self.records is not None:
            self.records.close()
        self.records = PairRecords(self.sums.chosen.numel(), self.terms)

    def _update(self, pl_module, outputs: dict, batch: dict) -> None:
        head = pl_module.head
        chosen, rejected = head.contributions(outputs["z_chosen"]), head.contributions(outputs["z_rejected"])
        residual = None  # a residualized SARM's residual margin term, the one part of a margin no feature's
        if "residual_chosen" in outputs:
            residual = outputs["residual_chosen"] - outputs["residual_rejected"]
            self.residualized = True
        self.sums.update(chosen, rejected, residual)
        self.records.add(outputs, batch.get("subset"), chosen - rejected, residual)

    def _finish(self, trainer, pl_module) -> None:
        columns = self.sums.compute()  # on every rank: compute() syncs, so every rank ranks alike
        order = rank_features(columns["mean_margin_contribution"]).cpu()
        active = ((columns["freq_chosen"] > 0) | (columns["freq_rejected"] > 0)).cpu()
        ranked = order[active[order]]  # the table lists active features only
        top = ranked[: self.top]
        pairs = {k: _gathered(v, pl_module.device) for k, v in self.records.tensors(top).items()}
        self.records.close()
        self.result = {k: v.cpu() for k, v in columns.items()}
        if trainer.logger is not None and trainer.state.fn != "predict":
            pl_module.log_dict(
                {f"attribution/feature_{int(i)}": columns["mean_margin_contribution"][i].float() for i in top},
                rank_zero_only=True,
            )
        self._write(pl_module, {k: v.cpu() for k, v in columns.items()}, ranked, top, pairs)

    @rank_zero_only
    def _write(self, pl_module, columns: dict, ranked: torch.Tensor, top: torch.Tensor, pairs: dict) -> None:
        weight = pl_module.head.weight.detach().cpu()
        rows = [
            {
                "rank": rank,
                "feature": int(i),
                "weight": float(weight[i]),
                **{k: float(columns[k][i]) for k in PER_FEATURE},
            }
            for rank, i in enumerate(ranked.tolist(), 1)
        ]
        summary = {
            "pairs": int(columns["pairs"]),
            "accuracy": float(columns["accuracy"]),
            "mean_margin": float(columns["mean_margin"]),
            "active_features": len(rows),
            "head_nonzero": int((weight != 0).sum()),
            "ranking": RANKING,
            # legibility: the mean share of each pair's |c_i| carried by its own m largest terms
            "top_m_share": {str(m): float(pairs[f"share_{m}"].double().mean()) for m in SHARE_MS},
        }
        if self.legibility is not None:
            summary["legibility"] = self.legibility
        if self.residualized:  # the share of the margins the features carry, the rest being the residual's
            summary["feature_share"] = float(columns["feature_share"])
        write_tables(self.output_dir, rows, summary)
        write_pairs(self.output_dir, pairs, top)
        print(
            f"\nsarm: attribution over {summary['pairs']} pairs: accuracy {summary['accuracy']:.4f}, "
            f"mean margin {summary['mean_margin']:.4f} -> {self.output_dir}"
        )
        shares = ", ".join(f"top-{m} {share:.1%}" for m, share in summary["top_m_share"].items())
        print(f"sarm: share of each pair's |contributions| carried by its own largest terms: {shares}")
        if self.residualized:
            share = summary["feature_share"]
            print(f"sarm: the features carry {share:.1%} of the |margins|, the dense residual the rest")
        if self.legibility is not None:
            print(describe(self.legibility))
        print(
            f"{'rank':>4} {'feature':>8} {'|margin contrib|':>16} {'margin contrib':>15} {'share':>7} {'weight':>9} "
            f"{'freq c':>7} {'freq r':>7} {'agree':>6}   (ranked by {RANKING})"
        )
        for r in rows[: self.top]:
            print(
                f"{r['rank']:>4} {r['feature']:>8} {r[RANK_COLUMN]:>16.4f} {r['mean_margin_contribution']:>15.4f} "
                f"{r['margin_share']:>7.1%} {r['weight']:>9.4f} {r['freq_chosen']:>7.1%} {r['freq_rejected']:>7.1%} "
                f"{r['sign_agreement']:>6.1%}"
            )

    # Lightning hooks: one accumulate/finish pair per loop we attribute.
    def on_validation_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "validate" in self.stages and not trainer.sanity_checking:
            self._update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module):
        if "validate" in self.stages and not trainer.sanity_checking:
            self._finish(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "test" in self.stages:
            self._update(pl_module, outputs, batch)

    def on_test_epoch_end(self, trainer, pl_module):
        if "test" in self.stages:
            self._finish(trainer, pl_module)

    def on_predict_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "predict" in self.stages:
            self._update(pl_module, outputs, batch)

    def on_predict_epoch_end(self, trainer, pl_module):
        if "predict" in self.stages:
            self._finish(trainer, pl_module)
