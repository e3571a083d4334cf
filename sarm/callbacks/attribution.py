"""Per-feature reward attribution over a whole preference dataset.

A SARM reward is an exact sum of feature contributions, r = Σ_i w_i z_i, so a pair's margin splits
exactly too: r_chosen − r_rejected = Σ_i w_i (z_i^chosen − z_i^rejected). ``RewardAttribution``
accumulates, per feature, over every pair seen in validate/test/predict:

    mean_margin_contribution   mean over pairs of w_i (z_i^c − z_i^r)   (features are ranked by this)
    mean_chosen_contribution   mean of w_i z_i^c
    mean_rejected_contribution mean of w_i z_i^r
    freq_chosen, freq_rejected share of chosen / rejected responses where the feature is active
    sign_agreement             share of pairs where the feature's margin term has the margin's sign
    margin_share               its mean margin contribution / the mean margin

The sums are torchmetrics states reduced with ``sum`` across ranks, so a multi-process run gives the
numbers of a single process; files are written by global rank 0 only.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import CatMetric, Metric

from sarm.io import atomic_path, write_json, write_text


class FeatureAttributionSums(Metric):
    """Per-feature sums over pairs; ``compute`` turns them into the table's columns."""

    full_state_update = False

    def __init__(self, n_latents: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("chosen", "rejected", "active_chosen", "active_rejected", "agree"):
            self.add_state(name, torch.zeros(n_latents, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("pairs", "margin", "correct"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, contrib_chosen: torch.Tensor, contrib_rejected: torch.Tensor) -> None:
        contrib_chosen, contrib_rejected = contrib_chosen.double(), contrib_rejected.double()
        diff = contrib_chosen - contrib_rejected
        margin = diff.sum(-1)
        # Out-of-place updates (see BRIEF §6: in-place states double-count under ddp_spawn).
        self.chosen = self.chosen + contrib_chosen.sum(0)
        self.rejected = self.rejected + contrib_rejected.sum(0)
        self.active_chosen = self.active_chosen + (contrib_chosen != 0).sum(0)
        self.active_rejected = self.active_rejected + (contrib_rejected != 0).sum(0)
        self.agree = self.agree + (diff * margin.sign()[:, None] > 0).sum(0)
        self.pairs = self.pairs + diff.shape[0]
        self.margin = self.margin + margin.sum()
        self.correct = self.correct + (margin > 0).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.pairs.clamp_min(1)
        mean_margin = (self.chosen - self.rejected) / n
        return {
            "mean_margin_contribution": mean_margin,
            "mean_chosen_contribution": self.chosen / n,
            "mean_rejected_contribution": self.rejected / n,
            "freq_chosen": self.active_chosen / n,
            "freq_rejected": self.active_rejected / n,
            "sign_agreement": self.agree / n,
            "margin_share": mean_margin / (self.margin / n),
            "pairs": self.pairs,
            "accuracy": self.correct / n,
            "mean_margin": self.margin / n,
        }


PAIR_COLUMNS = ("pair", "chosen_reward", "rejected_reward")


def _gathered(values: list[float], device) -> torch.Tensor:
    """This rank's values, concatenated with every other rank's (a ``CatMetric`` syncs them)."""
    metric = CatMetric().to(device)
    metric.update(torch.tensor(values, dtype=torch.float32, device=device))
    return metric.compute()


class RewardAttribution(L.Callback):
    """Accumulates per-feature reward attribution in validate/test/predict and writes it out.

    The module's step must return ``z_chosen``, ``z_rejected`` (latents), ``chosen_reward``,
    ``rejected_reward`` and ``pair``, and expose the head as ``pl_module.head``.

    Args:
        output_dir: where ``features.csv/json``, ``pairs.csv`` and ``summary.json`` go (rank 0).
        top: how many top features to print and log.
        stages: which loops to attribute: any of ``validate``, ``test``, ``predict``.
    """

    def __init__(self, output_dir: str = "runs/attribution", top: int = 10,
                 stages: tuple[str, ...] = ("test", "predict")):
        super().__init__()
        self.output_dir, self.top, self.stages = Path(output_dir), top, tuple(stages)
        self.sums: FeatureAttributionSums | None = None
        self.pair_rows: dict[str, list[float]] = {key: [] for key in PAIR_COLUMNS}
        self.result: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.sums = FeatureAttributionSums(pl_module.head.weight.numel()).to(pl_module.device)

    def _reset(self, *args) -> None:
        self.sums.reset()
        self.pair_rows = {key: [] for key in PAIR_COLUMNS}

    def _update(self, pl_module, outputs: dict) -> None:
        head = pl_module.head
        self.sums.update(head.contributions(outputs["z_chosen"]), head.contributions(outputs["z_rejected"]))
        # Plain lists, not a tensor per batch: thousands of small long-lived tensors fragment the
        # heap under the batches' large temporaries, and memory would grow with the dataset.
        for key, values in self.pair_rows.items():
            values.extend(outputs[key].float().tolist())

    def _finish(self, trainer, pl_module) -> None:
        columns = self.sums.compute()  # on every rank: compute() syncs
        pairs = {key: _gathered(values, pl_module.device) for key, values in self.pair_rows.items()}
        self.result = {k: v.cpu() for k, v in columns.items()}
        top = columns["mean_margin_contribution"].argsort(descending=True)[: self.top]
        if trainer.logger is not None and trainer.state.fn != "predict":
            pl_module.log_dict({f"attribution/feature_{int(i)}": columns["mean_margin_contribution"][i].float()
                                for i in top}, rank_zero_only=True)
        self._write(pl_module, columns, pairs)

    @rank_zero_only
    def _write(self, pl_module, columns: dict, pairs: dict) -> None:
        weight = pl_module.head.weight.detach().cpu()
        order = columns["mean_margin_contribution"].cpu().argsort(descending=True)
        per_feature = ("mean_margin_contribution", "mean_chosen_contribution", "mean_rejected_contribution",
                       "freq_chosen", "freq_rejected", "sign_agreement", "margin_share")
        rows = [
            {"feature": int(i), "weight": float(weight[i]), **{k: float(columns[k][i]) for k in per_feature}}
            for i in order
            if columns["freq_chosen"][i] > 0 or columns["freq_rejected"][i] > 0
        ]
        summary = {"pairs": int(columns["pairs"]), "accuracy": float(columns["accuracy"]),
                   "mean_margin": float(columns["mean_margin"]), "active_features": len(rows),
                   "head_nonzero": int((weight != 0).sum())}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.output_dir / "features.csv", _csv(rows))
        write_json(self.output_dir / "features.json", {"summary": summary, "features": rows})
        order = pairs["pair"].cpu().argsort()
        ids, chosen, rejected = (pairs[k].cpu()[order].tolist() for k in ("pair", "chosen_reward", "rejected_reward"))
        with atomic_path(self.output_dir / "pairs.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)  # row by row: one line per pair of the dataset, never all in memory
            writer.writerow(["pair", "chosen_reward", "rejected_reward", "margin", "correct"])
            for p, c, r in zip(ids, chosen, rejected):
                writer.writerow([int(p), c, r, c - r, c > r])
        write_json(self.output_dir / "summary.json", summary)
        print(f"\nsarm: attribution over {summary['pairs']} pairs: accuracy {summary['accuracy']:.4f}, "
              f"mean margin {summary['mean_margin']:.4f} -> {self.output_dir}")
        ranked = rows[: self.top]  # largest mean contribution to the margin first
        print(f"{'feature':>8} {'margin contrib':>15} {'share':>7} {'weight':>9} {'freq c':>7} {'freq r':>7} {'agree':>6}")
        for r in ranked:
            print(f"{r['feature']:>8} {r['mean_margin_contribution']:>15.4f} {r['margin_share']:>7.1%} "
                  f"{r['weight']:>9.4f} {r['freq_chosen']:>7.1%} {r['freq_rejected']:>7.1%} {r['sign_agreement']:>6.1%}")

    # Lightning hooks: one accumulate/finish pair per loop we attribute.
    def on_validation_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "validate" in self.stages and not trainer.sanity_checking:
            self._update(pl_module, outputs)

    def on_validation_epoch_end(self, trainer, pl_module):
        if "validate" in self.stages and not trainer.sanity_checking:
            self._finish(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "test" in self.stages:
            self._update(pl_module, outputs)

    def on_test_epoch_end(self, trainer, pl_module):
        if "test" in self.stages:
            self._finish(trainer, pl_module)

    def on_predict_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if "predict" in self.stages:
            self._update(pl_module, outputs)

    def on_predict_epoch_end(self, trainer, pl_module):
        if "predict" in self.stages:
            self._finish(trainer, pl_module)


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
