"""``compute_dtype``: a cache computed in bfloat16 is another cache, and a reward model trained on it scores text
computing the same way; float32 caches (every cache written before the setting) keep their fingerprints."""

from __future__ import annotations

import json

import pytest
import torch
from commands import cache_pairs

from sarm.cache import ActivationCache, CacheSettings, PairActivationDataModule
from sarm.cli import main
from sarm.reward import SARM
from sarm.reward.inference import RewardModel
from sarm.sae import TopKSAE, save_sae
from sarm.testing import quiet_trainer


@pytest.fixture(scope="module")
def bf16_cache(tiny_cache, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16-cache")
    main(
        cache_pairs(
            tiny_cache["data"],
            tiny_model_dir,
            root / "cache",
            split_fractions=[0.5, 0.25, 0.25],
            batch_size=8,
            shard_tokens=300,
            compute_dtype="bfloat16",
        )
    )
    return root / "cache"


def test_a_bfloat16_cache_is_another_cache_of_nearly_the_same_activations(tiny_cache, bf16_cache):
    float32, bfloat16 = ActivationCache(tiny_cache["cache"]), ActivationCache(bf16_cache)
    assert float32.manifest["settings"]["compute_dtype"] == "float32"
    assert bfloat16.manifest["settings"]["compute_dtype"] == "bfloat16"
    assert bfloat16.manifest["fingerprint"] != float32.manifest["fingerprint"]
    a, b = float32.last_token_activations().float(), bfloat16.last_token_activations().float()
    relative = float((a - b).norm() / a.norm())
    assert 0 < relative < 0.1  # computed otherwise, not another model's activations


def test_float32_is_the_fingerprint_caches_had_before_the_setting(tiny_cache):
    settings = CacheSettings(**ActivationCache(tiny_cache["cache"]).manifest["settings"])
    without = {k: v for k, v in json.loads(json.dumps(settings.__dict__)).items() if k != "compute_dtype"}
    assert settings.fingerprint() == CacheSettings(**without).fingerprint()
    assert CacheSettings(**without, compute_dtype="bfloat16").fingerprint() != settings.fingerprint()


def test_caching_the_other_way_into_a_cache_is_refused_naming_compute_dtype(
    tiny_cache, tiny_model_dir, bf16_cache, capsys
):
    with pytest.raises(SystemExit):
        main(
            cache_pairs(tiny_cache["data"], tiny_model_dir, bf16_cache, split_fractions=[0.5, 0.25, 0.25], batch_size=8)
        )
    assert "compute_dtype 'bfloat16' there, 'float32' asked" in capsys.readouterr().err


def test_a_model_trained_on_a_bfloat16_cache_scores_text_in_bfloat16(tiny_cache, bf16_cache, tmp_path):
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(32, 64, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    for name, cache in (("bf16", bf16_cache), ("fp32", tiny_cache["cache"])):
        model = SARM(sae=sae, pooling="mean", lr=0.05, export_dir=str(tmp_path / name))
        quiet_trainer(max_epochs=1, default_root_dir=str(tmp_path)).fit(model, PairActivationDataModule(str(cache), 8))
    exported = json.loads((tmp_path / "bf16" / "sarm.json").read_text())["backbone"]
    assert exported["compute_dtype"] == "bfloat16"
    assert RewardModel.load(tmp_path / "bf16").backbone.model.dtype == torch.bfloat16
    assert RewardModel.load(tmp_path / "fp32").backbone.model.dtype == torch.float32
    assert RewardModel.load(tmp_path / "bf16", dtype="float32").backbone.model.dtype == torch.float32  # asked for
