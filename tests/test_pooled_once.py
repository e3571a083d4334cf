"""Head-only training over pooled features computed once (``PairActivationDataModule.serve_pooled``): the same
head as pooling every epoch, each response encoded through the SAE once, and nothing stale served afterwards."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch

from sarm.cache import PairActivationDataModule
from sarm.reward import SARM
from sarm.reward.network import SARMNetwork
from sarm.reward.pooled import STORE_DIR
from sarm.sae import TopKSAE, save_sae
from sarm.testing import quiet_trainer


def train(cache, sae, root, epochs: int, serve: bool, patch: pytest.MonkeyPatch) -> tuple[SARM, int, L.Trainer]:
    """A SARM head trained ``epochs`` epochs; returns it, the responses its SAE pooled, and the trainer."""
    pooled = {"responses": 0}
    features = SARMNetwork.features

    def counted(self, hidden, mask=None):
        pooled["responses"] += hidden.shape[0]
        return features(self, hidden, mask)

    patch.setattr(SARMNetwork, "features", counted)
    if not serve:
        patch.setattr(PairActivationDataModule, "serve_pooled", lambda self, *args, **kwargs: False)
    torch.manual_seed(0)
    model = SARM(sae=sae, pooling="mean", lr=0.05)
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=str(root))
    data = PairActivationDataModule(str(cache), batch_size=8)
    trainer.fit(model, data)
    patch.undo()
    return model, pooled["responses"], trainer


def test_served_pooled_features_train_the_same_head_and_encode_each_response_once(tiny_cache, tmp_path):
    cache = tiny_cache["cache"]
    torch.manual_seed(0)
    sae = str(save_sae(TopKSAE(32, 64, 4), tmp_path / "sae", extra={"hook_layer": 2}))
    split = PairActivationDataModule(str(cache)).cache.manifest["split_pairs"]
    epochs = 3
    shutil.rmtree(cache / STORE_DIR, ignore_errors=True)  # nothing kept by other tests for this SAE
    with pytest.MonkeyPatch.context() as patch:
        served, served_count, trainer = train(cache, sae, tmp_path / "a", epochs, True, patch)
    with pytest.MonkeyPatch.context() as patch:  # a second fit reads what the first kept beside the cache
        again, again_count, _ = train(cache, sae, tmp_path / "c", epochs, True, patch)
    with pytest.MonkeyPatch.context() as patch:
        pooled_each_epoch, each_epoch_count, _ = train(cache, sae, tmp_path / "b", epochs, False, patch)

    torch.testing.assert_close(served.network.head.weight, pooled_each_epoch.network.head.weight, atol=1e-5, rtol=1e-5)
    assert served_count == 2 * (split["train"] + split["val"])  # both sides of every train and val pair, once
    assert again_count == 0 and torch.equal(again.network.head.weight, served.network.head.weight)
    sanity = min(2, -(-split["val"] // 8))  # Lightning's sanity check: 2 val batches of 8
    assert each_epoch_count == 2 * (epochs * (split["train"] + split["val"]) + min(split["val"], 8 * sanity))

    # after fit, the data module serves hidden states again: testing it equals testing a fresh one
    after = trainer.test(served, trainer.datamodule, verbose=False)[0]["test/accuracy"]
    fresh = trainer.test(served, PairActivationDataModule(str(cache), batch_size=8), verbose=False)[0]
    assert trainer.datamodule.pooled is None and after == fresh["test/accuracy"]


def test_a_split_that_was_not_pooled_is_served_as_hidden_states(tiny_cache):
    data = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=8)
    data.take_pooling("mean")

    def pool(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A stand-in pooling of every pair of ``split``, in its order: the sum over each side's tokens."""
        pairs = data.cache.pair_indices(split).tolist()
        z = data.hidden_batch(pairs)["hidden"].float().sum(1)
        return z[: len(pairs)], z[len(pairs) :]

    assert data.serve_pooled(pool, 32, ("train",))
    train_pair = int(data.cache.pair_indices("train")[0])
    test_pair = int(data.cache.pair_indices("test")[0])
    assert "features" in data.collate([train_pair]) and "hidden" in data.collate([test_pair])
    # the served rows are the function of each side's own hidden states (chosen first, then rejected)
    batch = data.hidden_batch([train_pair])
    torch.testing.assert_close(data.collate([train_pair])["features"], batch["hidden"].float().sum(1))
    assert not data.serve_pooled(pool, 32, ("train",), max_bytes=1)
