"""The HTML report: a self-contained page rendered from a synthetic ``Report`` (the schema the builder fills),
then opened in headless Chromium (skipped when Chromium is not installed; see scripts/install_chromium.sh)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from dataclasses import asdict, replace

import pytest

from sarm.explain import Context, Explanation
from sarm.report import render_html, render_report, schema

CHROMIUM = "/usr/bin/chromium"
FEATURES = [17, 4, 230, 91]
WEIGHTS = {17: 0.8, 4: -0.6, 230: 0.35, 91: -0.2}


def _dataset(name: str, seed: int, n: int = 60) -> schema.Dataset:
    rng = random.Random(seed)
    chosen = [rng.gauss(1.0, 1.0) for _ in range(n)]
    rejected = [rng.gauss(-0.3, 1.0) for _ in range(n)]
    features = []
    for rank, f in enumerate(FEATURES):
        contributions = [rng.gauss(WEIGHTS[f] * (1.2 - 0.2 * rank), 0.4) for _ in range(n)]
        features.append(
            schema.TopFeature(
                feature=f,
                weight=WEIGHTS[f],
                contributions=contributions,
                mean_margin_contribution=sum(contributions) / n,
                mean_chosen_contribution=0.5,
                mean_rejected_contribution=0.3,
                freq_chosen=0.4 + 0.1 * rank,
                freq_rejected=0.3,
                sign_agreement=0.7 - 0.05 * rank,
                margin_share=0.25 - 0.05 * rank,
            )
        )
    pairs = [  # the builder's four picks; feature 555 is a listed term but no top feature
        schema.Pair(
            3,
            "most confident",
            "user: What is 2+2?",
            "4.",
            "5, obviously <b>bold</b>",
            3.1,
            -1.4,
            [schema.Term(17, 2.0), schema.Term(4, 1.1), schema.Term(230, 0.9), schema.Term(555, -0.3)],
        ),
        schema.Pair(8, "second most confident", "user: Hi", "Hello!", "Go away.", 2.0, -0.5, [schema.Term(17, 1.5)]),
        schema.Pair(
            42,
            "misranked",
            "user: Write a poem.",
            "Roses are red...",
            "No.",
            -0.5,
            0.7,
            [schema.Term(4, -1.5), schema.Term(17, 0.4)],
        ),
        schema.Pair(7, "least confident", "user: Bye", "Bye!", "bye", 0.1, 0.05, []),
    ]
    steering = [
        schema.Steering(f, [f], "zero", 0.0, n, 0.71, 0.62 + 0.05 * i, 1.3, 0.8) for i, f in enumerate(FEATURES[:2])
    ]
    margins = [c - r for c, r in zip(chosen, rejected)]
    return schema.Dataset(
        name=name,
        n_pairs=n,
        accuracy=sum(m > 0 for m in margins) / n,
        mean_margin=sum(margins) / n,
        chosen_rewards=chosen,
        rejected_rewards=rejected,
        subsets={"chat": 0.8, "safety": 0.6} if seed == 0 else {},
        features=features,
        pairs=pairs,
        steering=steering,
        legibility=schema.Legibility(
            "test",
            ["5", "10", "all"],
            {"5": 0.61, "10": 0.7, "all": 0.8},
            {"5": 0.66, "10": 0.74, "all": 0.81},
            {"5": 0.4, "10": 0.55},
            0.83 if seed == 0 else None,  # the second dataset has no val split: no dense line
            4096,
        ),
    )


def _page(f: int) -> schema.FeaturePage:
    tokens = ["The", " user", " asked", " for", " <script>", "alert(1)", "</script>", " &", ' "quotes"', "\n", "ok"]
    activations = [0.0, 0.1, 0.3, 0.2, 2.5, 1.0, 0.4, 0.0, 0.05, 0.0, 0.6]
    return schema.FeaturePage(
        feature=f,
        weight=WEIGHTS[f],
        explanation=Explanation(f"Feature {f} fires on <code> & refusals", "offline", [], 0.82 if f != 91 else None),
        contexts=[
            Context(3, "chosen", 6, 12, 2.5, tokens, activations, 4),
            Context(42, "rejected", 85, 3, 1.7, ["I", " cannot", " help"], [0.1, 1.7, 0.4], 1),
        ],
    )


def synthetic_report() -> schema.Report:
    rng = random.Random(7)
    datasets = [_dataset("rewardbench2", 0), _dataset("held-out", 1)]
    a, b = ({f.feature: f.mean_margin_contribution for f in ds.features} for ds in datasets)
    return schema.Report(
        title="SARM report <test> & friends",
        model=schema.Model(
            "runs/demo/sarm", "sarm", {"model": "SmolLM2-135M-Instruct", "layer": 12}, 4096, 312, "last"
        ),
        datasets=datasets,
        feature_pages=[_page(f) for f in FEATURES],
        feature_map=schema.FeatureMap(
            FEATURES,
            [rng.uniform(-1, 1) for _ in FEATURES],
            [rng.uniform(-1, 1) for _ in FEATURES],
            [a[f] for f in FEATURES],
            "PCA of the features' unit decoder directions",
        ),
        comparison=schema.Comparison(
            "rewardbench2", "held-out", [schema.ComparisonRow(f, a[f], b[f], a[f] - b[f]) for f in FEATURES]
        ),
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    report = synthetic_report()
    path = render_report(report, tmp_path_factory.mktemp("report"))
    return report, path, path.read_text(encoding="ascii")


def test_report_html_is_complete_and_self_contained(rendered):
    report, path, page = rendered
    assert path.name == "report.html"
    assert json.loads((path.parent / "report.json").read_text()) == asdict(report)
    assert "<title>SARM report &lt;test&gt; &amp; friends</title>" in page

    # one section per feature, linked from the tables
    for f in FEATURES:
        assert page.count(f'id="feature-{f}"') == 1 and f'href="#feature-{f}"' in page
    assert 'href="#feature-555"' not in page and "<td>f555</td>" in page  # no section, no dangling link
    for anchor in (
        "summary",
        "top-features",
        "legibility",
        "feature-map",
        "features",
        "pairs",
        "steering",
        "comparison",
    ):
        assert f'<section id="{anchor}">' in page and f'href="#{anchor}"' in page
    assert 'class="pair misranked"' in page and "Comparison: rewardbench2 vs held-out" in page
    # the waterfall's remainder: margin 3.1 − (−1.4) = 4.5, listed terms 3.7
    assert '<td class="text">other features</td><td class="pos">+0.800</td><td>17.8%</td>' in page
    assert "detection score: 0.820" in page and "not scored" in page

    # plots are inline PNGs: per dataset a histogram, the top bars, the legibility curve, 4 distributions,
    # 4 waterfalls and the steering bars; then the map and the comparison
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 2 * (1 + 1 + 1 + 4 + 4 + 1) + 2
    # the legibility table: the curve's rows, and the dense line only where there is one
    assert "<tr><td>5</td><td>61.0%</td><td>66.0%</td>\n<td>40.0%</td></tr>" in page
    assert page.count('<td class="text">dense</td><td colspan="3">83.0%</td>') == 1
    assert all(src.startswith("data:image/png;base64,") for src in images)

    # text from the content is escaped: no live markup from contexts, responses or explanations
    assert "&lt;script&gt;" in page and "<script" not in page.lower()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;code&gt; &amp; refusals" in page
    assert 'class="focus" style="background: rgba(255, 140, 0, 1.00)"' in page

    # nothing external is loaded
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page


def test_report_with_one_dataset_and_no_steering_leaves_those_parts_out(tmp_path):
    """One dataset (no comparison), two top features (no feature map), steer_top 0, one feature that never fires."""
    ds = _dataset("only", 0)
    silent = schema.TopFeature(91, -0.2, [0.0] * ds.n_pairs)  # past the active features: no attribution statistics
    ds = replace(ds, features=[ds.features[0], silent], steering=[])
    report = replace(
        synthetic_report(), datasets=[ds], feature_pages=[_page(17), _page(91)], feature_map=None, comparison=None
    )
    page = render_report(report, tmp_path / "nested" / "out").read_text()
    for anchor in ("steering", "comparison", "feature-map"):
        assert f'id="{anchor}"' not in page and f'href="#{anchor}"' not in page
    assert 'id="feature-17"' in page and 'id="feature-91"' in page
    assert "<td>&#8212;</td><td>&#8212;</td>" in page  # the silent feature's statistics ("—", ASCII on disk)
    assert json.loads((tmp_path / "nested" / "out" / "report.json").read_text())["comparison"] is None
    assert render_html(report).startswith("<!DOCTYPE html>")


# Injected into a copy of the report (the report itself has no scripts): PROBE first in <head>, so it sees every
# error while the page loads; CHECKS at the end of <body>, to run once everything has loaded.
PROBE = """<script>
window.sarmErrors = [];
addEventListener("error", e => sarmErrors.push(e.message || "failed to load " + (e.target.src || "").slice(0, 60)),
                 true);
</script>"""
CHECKS = """<script>
addEventListener("load", () => {  // after every image has loaded or failed
  const shown = img => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0;
  const features = {};
  for (const section of document.querySelectorAll("article.feature")) {
    const images = [...section.querySelectorAll("img")];
    features[section.id] = {title: section.querySelector("h3").textContent, images: images.length,
                            shown: images.filter(shown).length};
  }
  const all = [...document.images];
  const out = document.createElement("pre");
  out.id = "sarm-checks";
  out.textContent = JSON.stringify({features, images: all.length, shown: all.filter(shown).length,
                                    errors: sarmErrors});
  document.body.append(out);
});
</script>"""


def test_report_in_headless_chromium(rendered, tmp_path):
    """What a reader sees, in a real browser: every top feature's section with its plots, every image decoded and
    laid out, no errors and no console messages.

    Method: a copy of the report in tmp_path gets two scripts (PROBE, CHECKS) that write their findings into the
    DOM; ``chromium --headless --dump-dom`` prints the DOM once the page has loaded and the checks ran (an image
    that loaded has decoded its size, ``naturalWidth`` > 0; a broken one has 0). Its ``--enable-logging=stderr`` log
    holds any console message as a ``CONSOLE`` line: the injected scripts log nothing, so any such line came from
    the page.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (run scripts/install_chromium.sh); the HTML checks still ran")
    page = rendered[2]
    probe = tmp_path / "report-probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1).replace("</body>", CHECKS + "</body>", 1))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        dom, log = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started, nothing else
        dom, log = proc.communicate()
        pytest.fail(f"chromium timed out after 120 s:\n{log[-2000:]}")
    found = re.search(r'<pre id="sarm-checks">(.*?)</pre>', dom, re.S)
    assert found, f"the checks did not run (rc={proc.returncode}):\n{log[-2000:]}"
    checks = json.loads(
        found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )

    # each top feature's section, each with a decoded, laid-out distribution plot per dataset that ranks it
    assert sorted(checks["features"]) == sorted(f"feature-{f}" for f in FEATURES)
    for f in FEATURES:
        section = checks["features"][f"feature-{f}"]
        assert section["title"].startswith(f"Feature {f} ") and section["images"] == section["shown"] == 2, section
    assert checks["images"] == checks["shown"] == page.count("<img "), checks
    assert checks["errors"] == []
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], "\n".join(console)
