"""Matplotlib figures for the HTML report, each returned as a ``data:image/png;base64,...`` URI.

Every function draws one part of the report's content (``sarm.report.schema``); the templates only
ask for a figure where its part is non-empty. Figures are built with the object-oriented ``Figure``
API on the Agg canvas (no pyplot global state, no display), drawn once into memory and dropped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

# Figures are attached to the Agg canvas explicitly, so the global backend (and pyplot) is never
# touched: safe in a headless run and in a notebook alike.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from sarm.report.schema import Comparison, Dataset, FeatureMap, Legibility, Pair, Steering, TopFeature

POSITIVE = "#2166ac"  # pushes the reward of the chosen response up (helps ranking)
NEGATIVE = "#b2182b"  # pushes it down (hurts ranking)
NEUTRAL = "#7f7f7f"
CHOSEN = "#1b9e77"
REJECTED = "#d95f02"
DPI = 100


def _figure(width: float = 6.0, height: float = 3.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def _finish(
    fig: Figure, ax, title: str = "", xlabel: str | None = None, ylabel: str | None = None, legend: bool = False
) -> str:
    """Label a ``_figure`` plot in the report's one style and return it as a data URI."""
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8, frameon=False)
    return to_data_uri(fig)


def to_data_uri(fig: Figure) -> str:
    """Render ``fig`` to PNG in memory and return it as a base64 data URI; the figure is cleared."""
    buf = io.BytesIO()
    try:
        fig.tight_layout()
    except Exception:  # layout is a nicety; never fail a report over it
        pass
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sign_colors(values: Sequence[float]) -> list[str]:
    return [POSITIVE if v > 0 else NEGATIVE if v < 0 else NEUTRAL for v in values]


def reward_histogram(dataset: Dataset, title: str = "") -> str:
    """Overlaid histograms of the chosen and rejected rewards, on shared bins."""
    c, r = dataset.chosen_rewards, dataset.rejected_rewards
    both = c + r
    lo, hi = min(both), max(both)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = int(min(40, max(5, math.sqrt(len(both)) * 2)))
    step = (hi - lo) / n_bins
    bins = [lo + i * step for i in range(n_bins + 1)]
    fig, ax = _figure()
    ax.hist(c, bins=bins, alpha=0.55, color=CHOSEN, label=f"chosen (n={len(c)})")
    ax.hist(r, bins=bins, alpha=0.55, color=REJECTED, label=f"rejected (n={len(r)})")
    return _finish(fig, ax, title, "reward", "pairs", legend=True)


def feature_bars(features: Sequence[TopFeature], title: str = "") -> str:
    """Horizontal bars of the features' mean margin contributions (first at the top; 0 for one that never fires),
    coloured by sign."""
    vals = [f.mean_margin_contribution or 0.0 for f in features]
    labels = [f"f{f.feature}" for f in features]
    height = min(8.0, max(2.0, 0.28 * len(vals) + 0.9))
    fig, ax = _figure(6.0, height)
    ys = list(range(len(vals)))
    ax.barh(ys, vals, color=_sign_colors(vals))
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    return _finish(fig, ax, title, "mean margin contribution")


def contribution_distribution(contributions: Sequence[float], title: str = "") -> str:
    """Histogram of one feature's per-pair margin contributions, with zero and the mean marked."""
    vals = contributions
    fig, ax = _figure(6.0, 2.4)
    lo, hi = min(vals), max(vals)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = int(min(40, max(5, math.sqrt(len(vals)) * 2)))
    step = (hi - lo) / n_bins
    # colour each bin by the sign of its centre
    counts = [0] * n_bins
    for v in vals:
        counts[min(n_bins - 1, int((v - lo) / step))] += 1
    centres = [lo + (i + 0.5) * step for i in range(n_bins)]
    ax.bar(centres, counts, width=step * 0.95, color=_sign_colors(centres), alpha=0.85)
    mean = sum(vals) / len(vals)
    ax.axvline(0, color="black", lw=0.6)
    label = f"mean {mean:+.3f}" if 1e-3 <= abs(mean) < 1e4 else f"mean {mean:+.3g}"
    ax.axvline(mean, color="black", lw=1.2, ls="--", label=label)
    return _finish(fig, ax, title, "margin contribution (chosen − rejected)", "pairs", legend=True)


def waterfall(pair: Pair, title: str = "") -> str:
    """Waterfall of a pair's margin: starts at 0, one floating bar per listed term, one for the other features'
    remainder and (a residualized SARM) one for the residual, so the running sum lands exactly on the margin, the
    last bar."""
    terms = [(f"f{t.feature}", t.value) for t in pair.contributions] + [("other features", pair.other)]
    if pair.residual is not None:  # a residualized SARM: the dense residual is a term of its own
        terms.append(("residual", pair.residual))
    labels = [t[0] for t in terms] + ["margin"]
    fig, ax = _figure(6.0, 3.0)
    running = 0.0
    for i, (_, value) in enumerate(terms):
        ax.bar(i, value, bottom=running, color=POSITIVE if value >= 0 else NEGATIVE, width=0.7)
        running += value
        ax.plot([i + 0.35, i + 0.65], [running, running], color=NEUTRAL, lw=0.8)  # connector
    ax.bar(len(terms), pair.margin, color="#444444", width=0.7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    return _finish(fig, ax, title, ylabel="reward margin")


def feature_map(projection: FeatureMap, title: str = "", max_labels: int = 30) -> str:
    """Scatter of a 2-D feature projection; colour = signed contribution, size ∝ |contribution|."""
    features, xs, ys, cs = projection.features, projection.x, projection.y, projection.margin_contribution
    n = len(features)
    amax = max((abs(c) for c in cs), default=0.0) or 1.0
    sizes = [12 + 140 * abs(c) / amax for c in cs]
    fig, ax = _figure(6.0, 4.2)
    sc = ax.scatter(
        xs, ys, c=cs, s=sizes, cmap="RdBu", norm=TwoSlopeNorm(0.0, -amax, amax), edgecolors="black", linewidths=0.3
    )
    cbar = fig.colorbar(sc, ax=ax, shrink=0.85)
    cbar.set_label("mean margin contribution", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    order = sorted(range(n), key=lambda i: -abs(cs[i]))[:max_labels]
    for i in order:
        ax.annotate(f"f{features[i]}", (xs[i], ys[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, ax, title)


def steering_bars(rows: Sequence[Steering], title: str = "") -> str:
    """Bars of the accuracy change (after − before) of each steering intervention."""
    labels = [f"f{s.feature} {s.operation} {s.value:g}" for s in rows]
    deltas = [s.accuracy - s.accuracy_before for s in rows]
    height = min(6.0, max(2.0, 0.3 * len(deltas) + 0.9))
    fig, ax = _figure(6.0, height)
    ys = list(range(len(deltas)))
    ax.barh(ys, [d * 100 for d in deltas], color=_sign_colors(deltas))
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    return _finish(fig, ax, title, "accuracy change (percentage points)")


def comparison_bars(comparison: Comparison, title: str = "") -> str:
    """Left: each feature's mean margin contribution on A and on B as paired bars around zero. Right: the
    difference A − B, as diverging bars coloured by sign."""
    rows = comparison.rows
    n, features = len(rows), [r.feature for r in rows]
    va, vb, diff = [r.a for r in rows], [r.b for r in rows], [r.difference for r in rows]
    height = min(8.0, max(2.2, 0.32 * n + 1.0))
    fig = Figure(figsize=(7.0, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax, ax_d = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(n))
    h = 0.4
    ax.barh([y - h / 2 for y in ys], va, height=h, color=CHOSEN, label=comparison.a)
    ax.barh([y + h / 2 for y in ys], vb, height=h, color="#7570b3", label=comparison.b)
    ax.set_yticks(ys, [f"f{f}" for f in features])
    ax.invert_yaxis()
    ax.set_xlabel("mean margin contribution", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax_d.barh(ys, diff, color=_sign_colors(diff))
    ax_d.set_xlabel("difference", fontsize=9)
    for axis in (ax, ax_d):
        axis.axvline(0, color="black", lw=0.6)
        axis.spines[["top", "right"]].set_visible(False)
        axis.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return to_data_uri(fig)


def legibility_curve(curve: Legibility, title: str = "") -> str:
    """Accuracy against the number of features kept (log axis; "all" at the SAE's width), the head's own weights
    and a refit, with the dense baseline as a horizontal line."""
    xs = [curve.n_features if m == "all" else int(m) for m in curve.ms]
    fig, ax = _figure(6.0, 3.2)
    ax.plot(xs, [curve.accuracy[m] for m in curve.ms], marker="o", color=POSITIVE, label="top-m kept (head weights)")
    ax.plot(
        xs, [curve.refit_accuracy[m] for m in curve.ms], marker="s", color=CHOSEN, label="top-m refit (train split)"
    )
    if curve.dense_accuracy is not None:
        ax.axhline(curve.dense_accuracy, color=NEUTRAL, ls="--", lw=1.2, label="dense head, same pooling")
    ax.set_xscale("log")
    ax.set_xticks(xs, [m if m != "all" else f"all\n({curve.n_features})" for m in curve.ms])
    ax.minorticks_off()
    return _finish(fig, ax, title, "features kept (m)", f"{curve.split} accuracy", legend=True)


def drift_bars(
    features: Sequence[int],
    delta: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    flagged: Sequence[bool],
    threshold: float,
    title: str = "",
) -> str:
    """The features' change of reward share from a reference to samples (``sarm.rl.drift``), first at the top: Δ as
    a bar with its simultaneous interval, flagged features (lower bound above the threshold) in red, the threshold
    as a dashed line."""
    height = min(8.0, max(2.0, 0.28 * len(delta) + 0.9))
    fig, ax = _figure(6.0, height)
    ys = list(range(len(delta)))
    colors = [NEGATIVE if f else NEUTRAL for f in flagged]
    errors = [[d - lo for d, lo in zip(delta, lower)], [up - d for d, up in zip(delta, upper)]]
    ax.barh(ys, delta, color=colors, xerr=errors, error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_yticks(ys, [f"f{f}" for f in features])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.axvline(threshold, color=NEGATIVE, lw=0.8, ls="--", label=f"threshold τ = {threshold:g}")
    return _finish(fig, ax, title, "Δ share of reward (samples − reference)", legend=True)
