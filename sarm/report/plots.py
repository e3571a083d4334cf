"""Matplotlib figures for the HTML report, each returned as a ``data:image/png;base64,...`` URI.

Every function takes plain Python lists/floats (the JSON-able report dict) and returns ``None``
when there is nothing to draw, so the HTML layer can simply skip the image. Figures are built
with the object-oriented ``Figure`` API on the Agg canvas (no pyplot global state, no display),
drawn once into memory and dropped.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Iterable, Sequence

# Figures are attached to the Agg canvas explicitly, so the global backend (and pyplot) is never
# touched: safe in a headless run and in a notebook alike.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

POSITIVE = "#2166ac"  # pushes the reward of the chosen response up (helps ranking)
NEGATIVE = "#b2182b"  # pushes it down (hurts ranking)
NEUTRAL = "#7f7f7f"
CHOSEN = "#1b9e77"
REJECTED = "#d95f02"
DPI = 100


def _finite(values: Iterable | None) -> list[float]:
    out = []
    for v in values or ():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _num(v, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _figure(width: float = 6.0, height: float = 3.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def _finish(fig: Figure, ax, title: str = "", xlabel: str | None = None, ylabel: str | None = None,
            legend: bool = False) -> str:
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


def reward_histogram(chosen: Sequence[float], rejected: Sequence[float], title: str = "") -> str | None:
    """Overlaid histograms of the chosen and rejected rewards, on shared bins."""
    c, r = _finite(chosen), _finite(rejected)
    if not c and not r:
        return None
    both = c + r
    lo, hi = min(both), max(both)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = int(min(40, max(5, math.sqrt(len(both)) * 2)))
    step = (hi - lo) / n_bins
    bins = [lo + i * step for i in range(n_bins + 1)]
    fig, ax = _figure()
    if c:
        ax.hist(c, bins=bins, alpha=0.55, color=CHOSEN, label=f"chosen (n={len(c)})")
    if r:
        ax.hist(r, bins=bins, alpha=0.55, color=REJECTED, label=f"rejected (n={len(r)})")
    return _finish(fig, ax, title, "reward", "pairs", legend=True)


def feature_bars(features: Sequence[int], values: Sequence[float], title: str = "",
                 xlabel: str = "mean margin contribution") -> str | None:
    """Horizontal bars, one per feature (first at the top), coloured by sign."""
    if not features:
        return None
    vals = [_num(v) for v in values]
    labels = [f"f{f}" for f in features]
    height = min(8.0, max(2.0, 0.28 * len(vals) + 0.9))
    fig, ax = _figure(6.0, height)
    ys = list(range(len(vals)))
    ax.barh(ys, vals, color=_sign_colors(vals))
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    return _finish(fig, ax, title, xlabel)


def contribution_distribution(contributions: Sequence[float], title: str = "") -> str | None:
    """Histogram of one feature's per-pair margin contributions, with zero and the mean marked."""
    vals = _finite(contributions)
    if not vals:
        return None
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
    ax.axvline(mean, color="black", lw=1.2, ls="--", label=f"mean {mean:+.3f}" if 1e-3 <= abs(mean) < 1e4 else f"mean {mean:+.3g}")
    return _finish(fig, ax, title, "margin contribution (chosen − rejected)", "pairs", legend=True)


def waterfall(terms: Sequence[tuple[str, float]], total: float, title: str = "") -> str | None:
    """Waterfall of the reward margin: starts at 0, one floating bar per term, ends at ``total``.

    ``terms`` are (label, value) pairs already including any "other features" remainder, so that
    the running sum lands exactly on ``total``.
    """
    if not terms:
        return None
    labels = [t[0] for t in terms] + ["margin"]
    fig, ax = _figure(6.0, 3.0)
    running = 0.0
    for i, (_, value) in enumerate(terms):
        value = _num(value)
        ax.bar(i, value, bottom=running, color=POSITIVE if value >= 0 else NEGATIVE, width=0.7)
        running += value
        ax.plot([i + 0.35, i + 0.65], [running, running], color=NEUTRAL, lw=0.8)  # connector
    total = _num(total)
    ax.bar(len(terms), total, color="#444444", width=0.7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    return _finish(fig, ax, title, ylabel="reward margin")


def feature_map(features: Sequence[int], x: Sequence[float], y: Sequence[float],
                contribution: Sequence[float] | None, title: str = "", max_labels: int = 30) -> str | None:
    """Scatter of a 2-D feature projection; colour = signed contribution, size ∝ |contribution|."""
    n = min(len(features), len(x), len(y))
    if n == 0:
        return None
    xs = [_num(v) for v in x[:n]]
    ys = [_num(v) for v in y[:n]]
    cs = [_num(v) for v in (contribution or [])[:n]]
    cs += [0.0] * (n - len(cs))
    amax = max((abs(c) for c in cs), default=0.0) or 1.0
    sizes = [12 + 140 * abs(c) / amax for c in cs]
    fig, ax = _figure(6.0, 4.2)
    sc = ax.scatter(xs, ys, c=cs, s=sizes, cmap="RdBu", norm=TwoSlopeNorm(0.0, -amax, amax),
                    edgecolors="black", linewidths=0.3)
    cbar = fig.colorbar(sc, ax=ax, shrink=0.85)
    cbar.set_label("mean margin contribution", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    order = sorted(range(n), key=lambda i: -abs(cs[i]))[:max_labels]
    for i in order:
        ax.annotate(f"f{features[i]}", (xs[i], ys[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, ax, title)


def steering_bars(labels: Sequence[str], before: Sequence[float], after: Sequence[float],
                  title: str = "") -> str | None:
    """Bars of the accuracy change (after − before) of each steering intervention."""
    if not labels:
        return None
    deltas = [_num(a) - _num(b) for a, b in zip(after, before)]
    height = min(6.0, max(2.0, 0.3 * len(deltas) + 0.9))
    fig, ax = _figure(6.0, height)
    ys = list(range(len(deltas)))
    ax.barh(ys, [d * 100 for d in deltas], color=_sign_colors(deltas))
    ax.set_yticks(ys, list(labels), fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    return _finish(fig, ax, title, "accuracy change (percentage points)")


def comparison_bars(features: Sequence[int], a: Sequence[float], b: Sequence[float],
                    difference: Sequence[float] | None, name_a: str, name_b: str,
                    title: str = "") -> str | None:
    """Left: each feature's value on A and on B as paired bars around zero. Right: the difference
    (as given in the report), as diverging bars coloured by sign."""
    n = min(len(features), len(a), len(b))
    if n == 0:
        return None
    va = [_num(v) for v in a[:n]]
    vb = [_num(v) for v in b[:n]]
    diff = [_num(v) for v in (difference or [])[:n]]
    if len(diff) < n:
        diff = [y - x for x, y in zip(va, vb)]
    height = min(8.0, max(2.2, 0.32 * n + 1.0))
    fig = Figure(figsize=(7.0, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax, ax_d = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(n))
    h = 0.4
    ax.barh([y - h / 2 for y in ys], va, height=h, color=CHOSEN, label=name_a)
    ax.barh([y + h / 2 for y in ys], vb, height=h, color="#7570b3", label=name_b)
    ax.set_yticks(ys, [f"f{f}" for f in features[:n]])
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
