"""Every SAE recipe in configs/sae/ trains through `sarm fit` and exports an SAE that reproduces its metrics."""

import json
from pathlib import Path

import pytest
import torch
from commands import fit_sae

from sarm.cache import ActivationCache
from sarm.cache.datamodules import TokenStream
from sarm.cli import main
from sarm.sae import load_sae
from sarm.sae.metrics import ReconstructionMetrics

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "sae").glob("*.yaml"))


VARIANTS = [(p, []) for p in RECIPES] + [
    # raw (unstandardized) inputs with a scale folded back on export
    (ROOT / "configs" / "sae" / "topk.yaml", ["--model.input_norm", "none", "--model.scale_activations", "true"]),
]


@pytest.mark.parametrize("config,extra", VARIANTS, ids=lambda v: v.stem if isinstance(v, Path) else "-".join(v[1::2]))
def test_recipe_trains_and_its_export_reads_raw_activations(config, extra, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    export = tmp_path / "export"
    main(fit_sae(tiny_cache["cache"], tmp_path, *extra, epochs=3, export=export, config=config.relative_to(ROOT)))
    if "--model.scale_activations" in extra:
        cfg = json.loads((export / "cfg.json").read_text())
        assert cfg["metadata"]["sarm"]["input_norm"] == "none" and cfg["normalize_activations"] == "none"
    metrics = json.loads((export / "metrics.json").read_text())
    assert 0 < metrics["val/fvu"] < 1.5 and metrics["val/l0"] > 0
    # The exported SAE (whitening folded in, BatchTopK threshold applied) reproduces the held-out FVU
    # from raw cached activations.
    sae = load_sae(export)
    cache = ActivationCache(tiny_cache["cache"])
    recon = ReconstructionMetrics(sae.d_in)
    with torch.no_grad():
        for batch in TokenStream(cache, "val", 64, shuffle=False, buffer_shards=1, seed=0):
            out = sae(batch)
            recon.update(out.x, out.x_hat)
    assert recon.compute()["fvu"].item() == pytest.approx(metrics["val/fvu"], rel=1e-3, abs=1e-4)
