"""Assemble the self-contained HTML report from a JSON-able report dict.

The page has no external resources at all: one inline ``<style>`` block, no scripts, and every
plot embedded as a ``data:image/png`` URI. All text that comes from the dict (titles, prompts,
responses, tokens, explanations, dataset names) is escaped with :func:`html.escape`.

Every key of the dict except the top-level structure is optional and every list may be empty;
a section whose data is absent is left out.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, Iterable

from sarm.io import write_json, write_text
from sarm.report import plots

CSS = """
:root { --pos: #2166ac; --neg: #b2182b; --muted: #666; --line: #ddd; --bg-alt: #f6f7f9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; background: #fff; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 16px; border-bottom: 1px solid var(--line); }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #333; }
h3 { font-size: 16px; margin: 18px 0 8px; }
h4 { font-size: 14px; margin: 12px 0 6px; }
a { color: var(--pos); text-decoration: none; }
a:hover { text-decoration: underline; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 4px 16px;
           margin: 8px 0 12px; }
dl.facts div { background: var(--bg-alt); padding: 4px 8px; border-radius: 4px; }
dl.facts dt { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
dl.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
nav ul { list-style: none; padding: 0; margin: 8px 0 12px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.note, figcaption, .meta { color: var(--muted); font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 12px 24px; }
figure { margin: 8px 0; }
img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--bg-alt); font-weight: 600; }
td.text, th.text { text-align: left; white-space: normal; }
.pos { color: var(--pos); }
.neg { color: var(--neg); }
.scroll { overflow-x: auto; }
article.feature, article.pair { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 10px;
                                margin: 14px 0; }
article.pair.misranked { border-left: 4px solid var(--neg); }
.badge { display: inline-block; font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #eee;
         color: #333; font-weight: 600; vertical-align: middle; }
.badge.misranked { background: #fbe3e4; color: var(--neg); }
blockquote.explanation { margin: 8px 0; padding: 6px 12px; border-left: 3px solid var(--pos);
                         background: var(--bg-alt); }
.context { margin: 6px 0; padding: 6px 8px; border: 1px solid var(--line); border-radius: 4px; }
.tokens { font: 13px/1.9 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
          overflow-wrap: anywhere; }
.tokens span { border-radius: 2px; }
.tokens span.focus { box-shadow: inset 0 0 0 2px #000; }
details { margin: 6px 0; }
details pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--bg-alt); padding: 6px 8px;
              margin: 4px 0; max-height: 18em; overflow-y: auto; font-size: 12px; }
.top { font-size: 12px; float: right; margin-top: -2px; }
footer { border-top: 1px solid var(--line); margin-top: 30px; padding: 10px 20px 30px; }
"""

# --------------------------------------------------------------------------------------------
# small formatting helpers


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def num(value: Any, signed: bool = False) -> str:
    """A number for a table cell: 3 decimals, or 3 significant digits when very large/small."""
    f = _float(value)
    if f is None:
        return "—"
    sign = "+" if signed else ""
    if f != 0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return format(f, f"{sign}.3g")
    return format(f, f"{sign}.3f")


def pct(value: Any, signed: bool = False) -> str:
    f = _float(value)
    if f is None:
        return "—"
    return format(100 * f, "+.1f" if signed else ".1f") + ("pp" if signed else "%")


def signed_cell(value: Any, formatter=None) -> str:
    f = _float(value)
    text = formatter(value) if formatter else num(value, signed=True)
    cls = "pos" if f and f > 0 else "neg" if f and f < 0 else ""
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def img(uri: str | None, alt: str, caption: str | None = None) -> str:
    if not uri:
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def table(headers: Iterable[str], rows: Iterable[str], text_cols: Iterable[int] = ()) -> str:
    text_cols = set(text_cols)
    head = "".join(
        f'<th class="text">{esc(h)}</th>' if i in text_cols else f"<th>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(f"<tr>{r}</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# --------------------------------------------------------------------------------------------
# the renderer


class _Renderer:
    def __init__(self, report: dict):
        self.report = report or {}
        self.datasets: list[dict] = [d for d in (self.report.get("datasets") or []) if isinstance(d, dict)]
        self.pages: dict[int, dict] = {}
        for key, page in (self.report.get("feature_pages") or {}).items():
            fid = _int(key)
            if fid is not None and isinstance(page, dict):
                self.pages[fid] = page
        # one section per feature: ranked features of each dataset first, then any other pages
        order: list[int] = []
        for ds in self.datasets:
            for feat in ds.get("features") or []:
                fid = _int(feat.get("feature"))
                if fid is not None and fid not in order:
                    order.append(fid)
        order += sorted(f for f in self.pages if f not in order)
        self.feature_ids = order
        self.linked = set(order)

    # ---- helpers ----------------------------------------------------------------------------

    def link(self, fid: Any) -> str:
        i = _int(fid)
        if i is None:
            return esc(fid)
        if i in self.linked:
            return f'<a href="#feature-{i}">f{i}</a>'
        return f"f{i}"

    def weight(self, fid: int) -> float | None:
        w = _float(self.pages.get(fid, {}).get("weight"))
        if w is not None:
            return w
        for ds in self.datasets:
            for feat in ds.get("features") or []:
                if _int(feat.get("feature")) == fid and _float(feat.get("weight")) is not None:
                    return _float(feat.get("weight"))
        return None

    def explanation_text(self, fid: int) -> str:
        exp = self.pages.get(fid, {}).get("explanation") or {}
        return str(exp.get("text") or "") if isinstance(exp, dict) else ""

    @staticmethod
    def n_pairs(ds: dict) -> Any:
        """The dataset's pair count. ``pairs`` is either that count or the list of selected pairs
        (both appear under that key in the report layout); ``n_pairs`` wins, then the rewards' length."""
        for value in (ds.get("n_pairs"), ds.get("pairs")):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return int(value)
        rewards = ds.get("chosen_rewards") or ds.get("rejected_rewards")
        return len(rewards) if rewards else "—"

    @staticmethod
    def selected_pairs(ds: dict) -> list[dict]:
        value = ds.get("selected_pairs")
        if value is None:
            value = ds.get("pairs")
        return [p for p in value if isinstance(p, dict)] if isinstance(value, list) else []

    def ds_name(self, i: int) -> str:
        return str(self.datasets[i].get("name") or f"dataset {i + 1}")

    # ---- sections ---------------------------------------------------------------------------

    def header(self) -> str:
        title = self.report.get("title") or "SARM report"
        model = self.report.get("model") or {}
        backbone = model.get("backbone") or {}
        facts = [
            ("model", model.get("path")),
            ("kind", model.get("kind")),
            ("backbone", backbone.get("model")),
            ("layer", backbone.get("layer")),
            ("SAE features", model.get("n_features")),
            ("non-zero head weights", model.get("head_nonzero")),
            ("pooling", model.get("pooling")),
        ]
        facts_html = "".join(
            f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts if v is not None and v != ""
        )
        for i, ds in enumerate(self.datasets):
            facts_html += (
                f"<div><dt>{esc(self.ds_name(i))}</dt><dd>{pct(ds.get('accuracy'))} accuracy · "
                f"{esc(self.n_pairs(ds))} pairs</dd></div>"
            )
        return (
            f"<header><h1>{esc(title)}</h1>"
            f'<dl class="facts">{facts_html}</dl>'
            '<p class="note">The reward is an exact sum of sparse-autoencoder feature contributions, '
            "reward = Σ<sub>i</sub> w<sub>i</sub> z<sub>i</sub>; a pair's margin (chosen − rejected) "
            "is the sum of the features' margin contributions w<sub>i</sub>(z<sub>i</sub><sup>chosen</sup> − "
            "z<sub>i</sub><sup>rejected</sup>). Blue pushes towards the chosen response, red towards the "
            "rejected one.</p>"
            f"{self.nav()}</header>"
        )

    def nav(self) -> str:
        items = []
        if self.datasets:
            items.append(("summary", "Datasets"))
        if any(ds.get("features") for ds in self.datasets):
            items.append(("top-features", "Top features"))
        if self._has_map():
            items.append(("feature-map", "Feature map"))
        if self.feature_ids:
            items.append(("features", f"Features ({len(self.feature_ids)})"))
        if any(self.selected_pairs(ds) for ds in self.datasets):
            items.append(("pairs", "Selected pairs"))
        if any(ds.get("steering") for ds in self.datasets):
            items.append(("steering", "Steering"))
        if self._has_comparison():
            items.append(("comparison", "Comparison"))
        if not items:
            return ""
        lis = "".join(f'<li><a href="#{a}">{esc(t)}</a></li>' for a, t in items)
        return f"<nav><ul>{lis}</ul></nav>"

    def summary(self) -> str:
        if not self.datasets:
            return ""
        cards = []
        for i, ds in enumerate(self.datasets):
            name = self.ds_name(i)
            stats = table(
                ["pairs", "accuracy", "mean margin"],
                [f"<td>{esc(self.n_pairs(ds))}</td><td>{pct(ds.get('accuracy'))}</td>"
                 f"{signed_cell(ds.get('mean_margin'))}"],
            )
            hist = img(
                plots.reward_histogram(ds.get("chosen_rewards") or [], ds.get("rejected_rewards") or []),
                f"reward histogram for {name}",
                "Rewards of the chosen and rejected responses.",
            )
            subsets = ds.get("subsets") or {}
            sub_html = ""
            if subsets:
                sub_html = "<h4>Subsets</h4>" + table(
                    ["subset", "accuracy"],
                    [f'<td class="text">{esc(k)}</td><td>{pct(v)}</td>' for k, v in subsets.items()],
                    text_cols=[0],
                )
            cards.append(f'<article class="dataset"><h3>{esc(name)}</h3>{stats}{hist}{sub_html}</article>')
        return f'<section id="summary"><h2>Datasets</h2><div class="grid">{"".join(cards)}</div></section>'

    def top_features(self) -> str:
        parts = []
        for i, ds in enumerate(self.datasets):
            feats = [f for f in ds.get("features") or [] if isinstance(f, dict)]
            if not feats:
                continue
            name = self.ds_name(i)
            chart = img(
                plots.feature_bars([_int(f.get("feature")) for f in feats],
                                   [f.get("mean_margin_contribution") for f in feats]),
                f"top features for {name}",
                "Mean margin contribution per feature (ranked); blue helps rank the chosen response higher.",
            )
            rows = []
            for rank, f in enumerate(feats, 1):
                fid = _int(f.get("feature"))
                exp = self.explanation_text(fid) if fid is not None else ""
                if len(exp) > 80:
                    exp = exp[:77] + "…"
                rows.append(
                    f"<td>{rank}</td><td>{self.link(f.get('feature'))}</td>"
                    f"{signed_cell(f.get('weight'))}{signed_cell(f.get('mean_margin_contribution'))}"
                    f"<td>{num(f.get('mean_chosen_contribution'), True)}</td>"
                    f"<td>{num(f.get('mean_rejected_contribution'), True)}</td>"
                    f"<td>{pct(f.get('freq_chosen'))}</td><td>{pct(f.get('freq_rejected'))}</td>"
                    f"<td>{pct(f.get('sign_agreement'))}</td><td>{pct(f.get('margin_share'))}</td>"
                    f'<td class="text">{esc(exp)}</td>'
                )
            tbl = table(
                ["#", "feature", "weight", "mean margin contr.", "mean chosen", "mean rejected",
                 "freq chosen", "freq rejected", "sign agreement", "margin share", "explanation"],
                rows,
                text_cols=[10],
            )
            parts.append(f"<h3>{esc(name)}</h3>{chart}{tbl}")
        if not parts:
            return ""
        return f'<section id="top-features"><h2>Top features</h2>{"".join(parts)}</section>'

    def _has_map(self) -> bool:
        fm = self.report.get("feature_map") or {}
        return bool(fm.get("features")) and bool(fm.get("x")) and bool(fm.get("y"))

    def feature_map(self) -> str:
        if not self._has_map():
            return ""
        fm = self.report["feature_map"]
        method = fm.get("method") or "2-D projection"
        uri = plots.feature_map(fm.get("features") or [], fm.get("x") or [], fm.get("y") or [],
                                fm.get("margin_contribution"))
        listed = ", ".join(self.link(f) for f in (fm.get("features") or []) if _int(f) in self.linked)
        links = f'<p class="meta">Features with a section: {listed}</p>' if listed else ""
        return (
            '<section id="feature-map"><h2>Feature map</h2>'
            + img(uri, "feature map",
                  f"Features projected to 2-D ({method}). Colour: sign and size of the mean margin "
                  "contribution; marker size ∝ |contribution|; the largest are labelled.")
            + links + "</section>"
        )

    def feature_sections(self) -> str:
        if not self.feature_ids:
            return ""
        arts = [self.feature_section(fid) for fid in self.feature_ids]
        return f'<section id="features"><h2>Features</h2>{"".join(arts)}</section>'

    def feature_section(self, fid: int) -> str:
        page = self.pages.get(fid, {})
        weight = self.weight(fid)
        head = (
            f'<h3>Feature {fid} <span class="badge">weight {num(weight, True)}</span>'
            f'<a class="top" href="#top-features">↑ top</a></h3>'
        )
        # per-dataset statistics and contribution distributions
        rows, plots_html = [], []
        for i, ds in enumerate(self.datasets):
            for f in ds.get("features") or []:
                if _int(f.get("feature")) != fid:
                    continue
                name = self.ds_name(i)
                rows.append(
                    f'<td class="text">{esc(name)}</td>{signed_cell(f.get("mean_margin_contribution"))}'
                    f"<td>{num(f.get('mean_chosen_contribution'), True)}</td>"
                    f"<td>{num(f.get('mean_rejected_contribution'), True)}</td>"
                    f"<td>{pct(f.get('freq_chosen'))}</td><td>{pct(f.get('freq_rejected'))}</td>"
                    f"<td>{pct(f.get('sign_agreement'))}</td><td>{pct(f.get('margin_share'))}</td>"
                )
                uri = plots.contribution_distribution(f.get("contributions") or [], title=name)
                if uri:
                    plots_html.append(img(uri, f"contribution distribution of feature {fid} on {name}",
                                          "Per-pair margin contribution of this feature."))
                break
        stats = ""
        if rows:
            stats = table(
                ["dataset", "mean margin contr.", "mean chosen", "mean rejected", "freq chosen",
                 "freq rejected", "sign agreement", "margin share"],
                rows,
                text_cols=[0],
            )
        dist = f'<div class="grid">{"".join(plots_html)}</div>' if plots_html else ""
        return (
            f'<article class="feature" id="feature-{fid}">{head}{stats}{dist}'
            f"{self.explanation(page)}{self.contexts(page)}</article>"
        )

    def explanation(self, page: dict) -> str:
        exp = page.get("explanation")
        if not isinstance(exp, dict) or not exp.get("text"):
            return ""
        meta = []
        if exp.get("method"):
            meta.append(f"method: {esc(exp['method'])}")
        det = _float(exp.get("detection"))
        meta.append(f"detection score: {num(det)}" if det is not None else "detection score: not scored")
        return (
            f'<h4>Explanation</h4><blockquote class="explanation">{esc(exp["text"])}'
            f'<div class="meta">{" · ".join(meta)}</div></blockquote>'
        )

    def contexts(self, page: dict) -> str:
        ctxs = [c for c in page.get("contexts") or [] if isinstance(c, dict)]
        if not ctxs:
            return ""
        # one scale per feature so intensities compare across its contexts
        peak = 0.0
        for c in ctxs:
            for a in c.get("activations") or []:
                f = _float(a)
                if f is not None:
                    peak = max(peak, f)
        items = []
        for c in ctxs:
            tokens = c.get("tokens") or []
            acts = c.get("activations") or []
            focus = _int(c.get("focus"))
            spans = []
            for j, tok in enumerate(tokens):
                a = _float(acts[j]) if j < len(acts) else None
                alpha = 0.0 if not a or peak <= 0 else min(1.0, max(0.0, a / peak))
                style = f' style="background: rgba(255, 140, 0, {alpha:.2f})"' if alpha >= 0.01 else ""
                cls = ' class="focus"' if j == focus else ""
                title = f' title="{num(a)}"' if a is not None else ""
                text = esc(str(tok).replace("\n", "↵"))
                spans.append(f"<span{cls}{style}{title}>{text}</span>")
            meta = []
            if c.get("pair") is not None:
                meta.append(f"pair {esc(c['pair'])}")
            if c.get("side"):
                meta.append(esc(c["side"]))
            if c.get("activation") is not None:
                meta.append(f"activation {num(c.get('activation'))}")
            items.append(
                f'<div class="context"><div class="meta">{" · ".join(meta)}</div>'
                f'<div class="tokens">{"".join(spans)}</div></div>'
            )
        return (
            f"<h4>Top-activating contexts</h4>"
            f'<p class="meta">Token shading ∝ activation / max activation of this feature ({num(peak)}); '
            f"the outlined token is the one the activation was read at.</p>{''.join(items)}"
        )

    def pairs(self) -> str:
        parts = []
        for i, ds in enumerate(self.datasets):
            sel = self.selected_pairs(ds)
            if not sel:
                continue
            parts.append(f"<h3>{esc(self.ds_name(i))}</h3>" + "".join(self.pair(p) for p in sel))
        if not parts:
            return ""
        return (
            '<section id="pairs"><h2>Selected pairs</h2><p class="note">Each waterfall starts at 0, adds '
            "the largest feature terms of the margin, then the remainder of all other features, and ends "
            f"at the margin (chosen − rejected reward).</p>{''.join(parts)}</section>"
        )

    def pair(self, p: dict) -> str:
        contribs = [c for c in p.get("contributions") or [] if isinstance(c, dict)]
        listed = sum(_float(c.get("value")) or 0.0 for c in contribs)
        rc, rr = _float(p.get("chosen_reward")), _float(p.get("rejected_reward"))
        margin = rc - rr if rc is not None and rr is not None else listed
        other = margin - listed
        terms = [(f"f{c.get('feature')}", _float(c.get("value")) or 0.0) for c in contribs]
        terms.append(("other features", other))
        label = str(p.get("label") or "")
        misranked = margin < 0
        badge = f' <span class="badge{" misranked" if misranked else ""}">{esc(label)}</span>' if label else ""
        if misranked and "misrank" not in label.lower():
            badge += ' <span class="badge misranked">misranked</span>'
        pid = p.get("pair")
        heading = f"Pair {esc(pid)}" if pid is not None else "Pair"
        facts = table(
            ["chosen reward", "rejected reward", "margin"],
            [f"<td>{num(rc, True)}</td><td>{num(rr, True)}</td>{signed_cell(margin)}"],
        )
        chart = img(plots.waterfall(terms, margin), f"waterfall for pair {pid}")
        rows = [
            f"<td>{self.link(c.get('feature'))}</td>{signed_cell(c.get('value'))}"
            f"<td>{pct((_float(c.get('value')) or 0.0) / margin) if margin else '—'}</td>"
            for c in contribs
        ]
        rows.append(f'<td class="text">other features</td>{signed_cell(other)}'
                    f"<td>{pct(other / margin) if margin else '—'}</td>")
        terms_tbl = table(["feature", "contribution", "share of margin"], rows)
        texts = "".join(
            f"<details><summary>{name}</summary><pre>{esc(p.get(key))}</pre></details>"
            for key, name in (("prompt", "prompt"), ("chosen", "chosen response"), ("rejected", "rejected response"))
            if p.get(key)
        )
        cls = "pair misranked" if misranked else "pair"
        return (
            f'<article class="{cls}"><h4>{heading}{badge}</h4>{facts}'
            f'<div class="grid"><div>{chart}</div><div>{terms_tbl}</div></div>{texts}</article>'
        )

    def steering(self) -> str:
        parts = []
        for i, ds in enumerate(self.datasets):
            rows_in = [s for s in ds.get("steering") or [] if isinstance(s, dict)]
            if not rows_in:
                continue
            labels, rows = [], []
            for s in rows_in:
                op, val = s.get("operation") or "", _float(s.get("value"))
                labels.append(f"f{s.get('feature')} {op}" + (f" {val:g}" if val is not None else ""))
                d_acc = (_float(s.get("accuracy")) or 0.0) - (_float(s.get("accuracy_before")) or 0.0)
                d_mar = (_float(s.get("mean_margin")) or 0.0) - (_float(s.get("mean_margin_before")) or 0.0)
                rows.append(
                    f"<td>{self.link(s.get('feature'))}</td><td class=\"text\">{esc(op)}</td><td>{num(val)}</td>"
                    f"<td>{pct(s.get('accuracy_before'))}</td><td>{pct(s.get('accuracy'))}</td>"
                    f"{signed_cell(d_acc, lambda v: pct(v, signed=True))}"
                    f"<td>{num(s.get('mean_margin_before'), True)}</td><td>{num(s.get('mean_margin'), True)}</td>"
                    f"{signed_cell(d_mar)}"
                )
            chart = img(
                plots.steering_bars(labels, [s.get("accuracy_before") for s in rows_in],
                                    [s.get("accuracy") for s in rows_in]),
                f"steering accuracy change on {self.ds_name(i)}",
                "Change of pairwise accuracy when the feature is steered.",
            )
            tbl = table(
                ["feature", "operation", "value", "accuracy before", "accuracy after", "Δ accuracy",
                 "mean margin before", "mean margin after", "Δ margin"],
                rows,
                text_cols=[1],
            )
            parts.append(f"<h3>{esc(self.ds_name(i))}</h3>{tbl}{chart}")
        if not parts:
            return ""
        return f'<section id="steering"><h2>Steering</h2>{"".join(parts)}</section>'

    def _has_comparison(self) -> bool:
        comp = self.report.get("comparison")
        return isinstance(comp, dict) and bool(comp.get("rows"))

    def comparison(self) -> str:
        if not self._has_comparison():
            return ""
        comp = self.report["comparison"]
        a, b = str(comp.get("a") or "A"), str(comp.get("b") or "B")
        rows_in = [r for r in comp["rows"] if isinstance(r, dict)]
        rows = [
            f"<td>{self.link(r.get('feature'))}</td>{signed_cell(r.get('a'))}{signed_cell(r.get('b'))}"
            f"{signed_cell(r.get('difference'))}"
            for r in rows_in
        ]
        tbl = table(["feature", a, b, "difference"], rows)
        chart = img(
            plots.comparison_bars([_int(r.get("feature")) for r in rows_in], [r.get("a") for r in rows_in],
                                  [r.get("b") for r in rows_in], [r.get("difference") for r in rows_in], a, b),
            f"comparison of {a} and {b}",
            f"Mean margin contribution per feature on {a} and {b}, and their difference.",
        )
        return (
            f'<section id="comparison"><h2>Comparison: {esc(a)} vs {esc(b)}</h2>'
            f'<div class="grid"><div>{tbl}</div><div>{chart}</div></div></section>'
        )

    def render(self) -> str:
        title = self.report.get("title") or "SARM report"
        body = "".join(
            [
                self.summary(),
                self.top_features(),
                self.feature_map(),
                self.feature_sections(),
                self.pairs(),
                self.steering(),
                self.comparison(),
            ]
        )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"{self.header()}\n<main>\n{body}\n</main>\n"
            '<footer class="note">Generated by <code>sarm report</code>. Self-contained: no scripts, '
            "no external resources.</footer>\n</body>\n</html>\n"
        )


def render_html(report: dict) -> str:
    """The report page as a string (pure: no files written)."""
    return _Renderer(report).render()


def render_report(report: dict, output_dir: str | Path) -> Path:
    """Write ``output_dir/report.html`` (self-contained) and ``output_dir/report.json`` (the dict).

    Both writes are atomic. Returns the path of the HTML file.
    """
    output_dir = Path(output_dir)
    # pure ASCII on disk (non-ASCII as character references), whatever the locale's encoding
    page = render_html(report).encode("ascii", "xmlcharrefreplace").decode("ascii")
    json_path, html_path = output_dir / "report.json", output_dir / "report.html"
    write_json(json_path, report)
    write_text(html_path, page)
    for path in (json_path, html_path):  # the atomic temp file is created 0600; a report is for sharing
        os.chmod(path, 0o644)
    return html_path
