"""The HTML report: a self-contained page rendered from a synthetic report dict, then screenshotted
in headless Chromium (skipped when Chromium is not installed; see scripts/install_chromium.sh)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from sarm.report import render_html, render_report

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "runs" / "test-artifacts"
FEATURES = [17, 4, 230, 91]
WEIGHTS = {17: 0.8, 4: -0.6, 230: 0.35, 91: -0.2}


def _dataset(name: str, seed: int, n: int = 60) -> dict:
    rng = random.Random(seed)
    chosen = [rng.gauss(1.0, 1.0) for _ in range(n)]
    rejected = [rng.gauss(-0.3, 1.0) for _ in range(n)]
    feats = []
    for rank, fid in enumerate(FEATURES):
        mean = WEIGHTS[fid] * (1.2 - 0.2 * rank) * (1 if seed == 0 else 0.7)
        contribs = [rng.gauss(mean, 0.4) for _ in range(n)]
        feats.append({
            "feature": fid, "weight": WEIGHTS[fid], "mean_margin_contribution": sum(contribs) / n,
            "mean_chosen_contribution": mean + 0.3, "mean_rejected_contribution": 0.3,
            "freq_chosen": 0.4 + 0.1 * rank, "freq_rejected": 0.3, "sign_agreement": 0.7 - 0.05 * rank,
            "margin_share": 0.25 - 0.05 * rank, "contributions": contribs,
        })
    pairs = [
        {"pair": 3, "label": "most confident", "prompt": "What is 2+2?", "chosen": "4.",
         "rejected": "5, obviously <b>bold</b>", "chosen_reward": 3.1, "rejected_reward": -1.4,
         "contributions": [{"feature": 17, "value": 2.0}, {"feature": 4, "value": 1.1},
                           {"feature": 230, "value": 0.9}, {"feature": 555, "value": -0.3}]},
        {"pair": 42, "label": "misranked", "prompt": "Write a poem.", "chosen": "Roses are red...",
         "rejected": "No.", "chosen_reward": -0.5, "rejected_reward": 0.7,
         "contributions": [{"feature": 4, "value": -1.5}, {"feature": 17, "value": 0.4}]},
    ]
    steering = [
        {"feature": 17, "operation": "ablate", "value": 0.0, "accuracy_before": 0.71, "accuracy": 0.62,
         "mean_margin_before": 1.3, "mean_margin": 0.8},
        {"feature": 4, "operation": "scale", "value": 2.0, "accuracy_before": 0.71, "accuracy": 0.74,
         "mean_margin_before": 1.3, "mean_margin": 1.5},
    ]
    # "pairs" holds the selected pairs; the count comes from "n_pairs" or, failing that, the rewards
    return {
        "name": name, **({"n_pairs": n} if seed == 0 else {}), "accuracy": 0.71 - 0.05 * seed, "mean_margin": 1.3,
        "chosen_rewards": chosen, "rejected_rewards": rejected,
        "subsets": {"chat": 0.8, "safety": 0.6} if seed == 0 else {},
        "features": feats, "pairs": pairs, "steering": steering,
    }


def synthetic_report() -> dict:
    toks = ["The", " user", " asked", " for", " <script>", "alert(1)", "</script>", " &", " \"quotes\"", "\n", "ok"]
    acts = [0.0, 0.1, 0.3, 0.2, 2.5, 1.0, 0.4, 0.0, 0.05, 0.0, 0.6]
    pages = {
        str(fid): {
            "weight": WEIGHTS[fid],
            "explanation": {"text": f"Feature {fid} fires on <code> & refusals", "method": "max-activating",
                            "detection": 0.82 if fid != 91 else None},
            "contexts": [
                {"tokens": toks, "activations": acts, "activation": 2.5, "focus": 4, "side": "chosen", "pair": 3},
                {"tokens": ["I", " cannot", " help"], "activations": [0.1, 1.7, 0.4], "activation": 1.7,
                 "focus": 1, "side": "rejected", "pair": 42},
            ],
        }
        for fid in FEATURES
    }
    rng = random.Random(7)
    map_feats = FEATURES + [555, 600, 601, 602]
    return {
        "title": "SARM report <test> & friends",
        "model": {"path": "runs/demo/sarm.ckpt", "kind": "sarm",
                  "backbone": {"model": "SmolLM2-135M-Instruct", "layer": 12},
                  "n_features": 4096, "head_nonzero": 312, "pooling": "last"},
        "datasets": [_dataset("rewardbench2", 0), _dataset("held-out", 1)],
        "feature_pages": pages,
        "feature_map": {"features": map_feats, "x": [rng.uniform(-1, 1) for _ in map_feats],
                        "y": [rng.uniform(-1, 1) for _ in map_feats],
                        "margin_contribution": [rng.uniform(-1, 1) for _ in map_feats], "method": "PCA"},
        "comparison": {"a": "rewardbench2", "b": "held-out",
                       "rows": [{"feature": f, "a": WEIGHTS[f], "b": WEIGHTS[f] * 0.7,
                                 "difference": WEIGHTS[f] * 0.3} for f in FEATURES]},
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = synthetic_report()
    path = render_report(report, out)
    return report, path, path.read_text(encoding="ascii")


def test_report_html_is_complete_and_self_contained(rendered):
    report, path, page = rendered
    assert path.name == "report.html" and path.exists()
    assert json.loads((path.parent / "report.json").read_text()) == report
    assert "<title>SARM report &lt;test&gt; &amp; friends</title>" in page

    # one section per feature, linked from the tables
    for fid in FEATURES:
        assert f'id="feature-{fid}"' in page
        assert f'href="#feature-{fid}"' in page
    assert 'href="#feature-555"' not in page  # no section, no dangling link

    for anchor in ("summary", "top-features", "feature-map", "features", "pairs", "steering", "comparison"):
        assert f'<section id="{anchor}">' in page
    assert "misranked" in page and "other features" in page
    assert page.count("<td>60</td><td>") == 2  # pair count from n_pairs, and from the rewards
    assert "Comparison: rewardbench2 vs held-out" in page
    assert "detection score: 0.820" in page and "not scored" in page

    # plots are inline PNGs: histograms x2, top bars x2, map, 4x2 distributions, 2x2 waterfalls, 2 steering, comparison
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 2 + 2 + 1 + 8 + 4 + 2 + 1
    assert all(src.startswith("data:image/png;base64,") for src in images)

    # user text escaped: no live markup from contexts, responses or explanations
    assert "&lt;script&gt;" in page
    assert "<script" not in page.lower()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;code&gt; &amp; refusals" in page
    assert 'class="focus"' in page and "background: rgba(255, 140, 0, 1.00)" in page

    # nothing external is loaded
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page


def test_report_renders_with_missing_and_empty_parts(tmp_path):
    minimal = render_html({"title": "bare", "datasets": [{"name": "d", "features": [], "pairs": []}]})
    assert "<h1>bare</h1>" in minimal and "<img" not in minimal
    assert render_html({}).startswith("<!DOCTYPE html>")
    report = synthetic_report()
    for ds in report["datasets"]:
        ds.pop("steering")
        ds["chosen_rewards"] = []
    del report["comparison"], report["feature_map"]
    page = render_report(report, tmp_path / "nested" / "out").read_text()
    assert 'id="steering"' not in page and 'id="comparison"' not in page and 'id="feature-map"' not in page
    assert 'id="feature-17"' in page


def test_report_screenshot_in_headless_chromium(rendered, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (run scripts/install_chromium.sh); HTML checks still ran")
    _, path, _ = rendered
    shot = tmp_path / "report-screenshot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1280,2000", path.resolve().as_uri(),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started, nothing else
        log, _ = proc.communicate()
        pytest.fail(f"chromium timed out after 120 s:\n{log[-2000:]}")
    assert shot.exists(), f"no screenshot (rc={proc.returncode}):\n{log[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"screenshot suspiciously small: {len(data)} bytes"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report-screenshot.png")
