"""Pooled features kept beside the cache (``sarm.reward.pooled``): read back bit for bit instead of pooled again,
keyed by everything that decides them and nothing else, never served to another cache, and a run that cannot keep
them still gets them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sarm.cache import PairActivationDataModule
from sarm.reward import SARM
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.reward.pooled import STORE_DIR, features_key, pooled_features, store_path
from sarm.sae import TopKSAE, load_sae, save_sae
from sarm.testing import quiet_trainer


@pytest.fixture
def cache(tiny_cache, tmp_path):
    """A private copy of the toy cache, with nothing kept beside it yet."""
    copy = tmp_path / "cache"
    shutil.copytree(tiny_cache["cache"], copy, ignore=shutil.ignore_patterns(STORE_DIR))
    return copy


@pytest.fixture
def network():
    torch.manual_seed(0)
    return SARMNetwork(TopKSAE(32, 64, 4), pooling="mean")


class Counted:
    """Counts the sequences ``SARMNetwork.features`` pools while patched in."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.sequences, features = 0, SARMNetwork.features

        def counted(net, hidden, mask=None):
            self.sequences += hidden.shape[0]
            return features(net, hidden, mask)

        patch.setattr(SARMNetwork, "features", counted)


def test_kept_features_are_read_back_bit_for_bit_without_pooling_again(cache, network, monkeypatch):
    data = PairActivationDataModule(str(cache))
    fresh = pooled_features(network, data, "train", store=False)
    counted = Counted(monkeypatch)
    first = pooled_features(network, data, "train")
    pooled_once = counted.sequences
    again = pooled_features(network, PairActivationDataModule(str(cache)), "train")

    assert pooled_once == 2 * data.cache.manifest["split_pairs"]["train"] and counted.sequences == pooled_once
    assert store_path(cache, features_key(network), "train").is_file()
    for a, b, c in zip(fresh, first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_the_key_follows_what_decides_the_features_and_ignores_the_head(network, tmp_path):
    key = features_key(network)
    network.head.weight.data.normal_()
    assert features_key(network) == key  # a retrained head reads the same features

    reloaded = SARMNetwork(load_sae(save_sae(network.sae, tmp_path / "sae")), pooling="mean")
    assert features_key(reloaded) == key  # an exported SAE is the same SAE

    assert features_key(SARMNetwork(network.sae, pooling="last")) != key
    assert features_key(SARMNetwork(network.sae, pooling="mean", features="pre")) != key
    edited = SARMNetwork(load_sae(tmp_path / "sae"), pooling="mean")
    edited.sae.latent_mask[3] = False  # a feature switched off changes every pooled feature vector's column 3
    assert features_key(edited) != key
    retrained = SARMNetwork(load_sae(tmp_path / "sae"), pooling="mean")
    retrained.sae.W_enc.data[0, 0] += 1e-6
    assert features_key(retrained) != key
    assert features_key(DenseNetwork(32, "mean")) not in (key, features_key(DenseNetwork(32, "last")))


def test_features_kept_for_another_cache_or_unreadable_are_pooled_again_and_replaced(cache, network, monkeypatch):
    data = PairActivationDataModule(str(cache))
    expected = pooled_features(network, data, "val")
    path = store_path(cache, features_key(network), "val")

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"cache_fingerprint": "another cache", "split": "val"})
    counted = Counted(monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(pooled_features(network, data, "val"), expected, strict=True))
    assert counted.sequences > 0  # pooled again, not read from the other cache's file

    path.write_bytes(path.read_bytes()[:100])  # a truncated write
    counted.sequences = 0
    assert all(torch.equal(a, b) for a, b in zip(pooled_features(network, data, "val"), expected, strict=True))
    assert counted.sequences > 0
    counted.sequences = 0
    pooled_features(network, data, "val")
    assert counted.sequences == 0  # the replaced file is whole again


def test_a_cache_that_cannot_keep_them_still_serves_them(cache, network, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("sarm.io.save_tensors", refuse)
    data = PairActivationDataModule(str(cache))
    for _ in range(2):
        chosen, _, _ = pooled_features(network, data, "test")
        assert chosen.shape == (data.cache.manifest["split_pairs"]["test"], 64)
    assert capsys.readouterr().err.count("cannot keep pooled features") == 1
    assert not (cache / STORE_DIR).exists() or not any((cache / STORE_DIR).iterdir())


def test_sarm_test_after_fit_pools_each_split_once_and_scores_as_the_hidden_states_do(cache, tmp_path, monkeypatch):
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(32, 64, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    split = json.loads((cache / "manifest.json").read_text())["split_pairs"]
    model = SARM(sae=sae, pooling="mean", lr=0.05, export_dir=str(tmp_path / "export"))
    quiet_trainer(max_epochs=2, default_root_dir=str(tmp_path)).fit(model, PairActivationDataModule(str(cache), 8))

    counted = Counted(monkeypatch)
    restored = SARM(init_from=str(tmp_path / "export"))
    served = quiet_trainer().test(restored, PairActivationDataModule(str(cache), 8), verbose=False)[0]
    # the test pairs once (the test loop keeps them); legibility's train split was kept by the fit
    assert counted.sequences == 2 * split["test"]

    monkeypatch.setattr(PairActivationDataModule, "serve_pooled", lambda self, *args, **kwargs: False)
    shutil.rmtree(cache / STORE_DIR)
    hidden = quiet_trainer().test(restored, PairActivationDataModule(str(cache), 8), verbose=False)[0]
    assert served["test/accuracy"] == hidden["test/accuracy"]
    assert served["test/top5_refit_accuracy"] == hidden["test/top5_refit_accuracy"]
    assert served["test/reward_mean"] == pytest.approx(hidden["test/reward_mean"], abs=1e-6)
