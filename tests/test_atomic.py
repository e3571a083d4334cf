"""Writes are all-or-nothing: an interrupted write keeps the old file (or none), never half of a new one;
an interrupted export leaves a directory that loaders refuse rather than misread."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import sarm.reward.export as export
import sarm.sae.io as sae_io
from sarm.cache import ActivationCache
from sarm.errors import SarmInputError
from sarm.io import atomic_path, file_name, save_tensors, write_json, write_text
from sarm.reward.export import load_network, save_reward_model
from sarm.reward.network import SARMNetwork
from sarm.sae import TopKSAE, load_sae, save_sae

BACKBONE = {"model": "some/model", "layer": 2, "max_length": 32}


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.json"
    write_json(path, {"version": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text('{"version": 2, "rows": [')  # half of the new content...
            raise KeyboardInterrupt  # ...when the run is stopped
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_usual_mode_under_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_text(tmp_path / "b.txt", "b")
        save_tensors(tmp_path / "c.safetensors", {"c": torch.zeros(2)})
        save_sae(TopKSAE(8, 16, 4), tmp_path / "sae")
    finally:
        os.umask(old)
    written = ["a.json", "b.txt", "c.safetensors", "sae/cfg.json", "sae/sae_weights.safetensors"]
    assert {name: oct(stat.S_IMODE((tmp_path / name).stat().st_mode)) for name in written} == {
        name: oct(mode) for name in written
    }


def test_json_is_written_strict_with_null_for_non_finite_numbers(tmp_path):
    def refuse(constant):
        raise ValueError(constant)

    write_json(tmp_path / "m.json", {"loss": float("nan"), "range": [float("-inf"), 1.5, float("inf")], "n": 3})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "loss": None,
        "range": [None, 1.5, None],
        "n": 3,
    }


def _interrupt_on(monkeypatch, module, function: str, suffix: str):
    """Make ``module.<function>`` stop the run when it writes a file ending in ``suffix``."""
    real = getattr(module, function)

    def interrupted(path, *args, **kwargs):
        if str(path).endswith(suffix):
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, function, interrupted)


def test_an_export_interrupted_over_an_old_one_is_refused_not_mixed(tmp_path, monkeypatch):
    old = SARMNetwork(TopKSAE(8, 16, 4))
    save_reward_model(tmp_path, old, BACKBONE)
    load_network(tmp_path)  # complete
    _interrupt_on(monkeypatch, export, "save_tensors", "head.safetensors")  # after the new SAE, before the head
    with pytest.raises(KeyboardInterrupt):
        save_reward_model(tmp_path, SARMNetwork(TopKSAE(8, 32, 4)), BACKBONE)
    with pytest.raises(SarmInputError, match="no trained reward model here"):
        load_network(tmp_path)


def test_an_sae_interrupted_between_weights_and_config_is_refused_not_misread(tmp_path, monkeypatch):
    save_sae(TopKSAE(8, 16, 4), tmp_path)
    # Same shapes, another k: new weights under the old config would load silently as the wrong SAE.
    _interrupt_on(monkeypatch, sae_io, "write_json", "cfg.json")
    with pytest.raises(KeyboardInterrupt):
        save_sae(TopKSAE(8, 16, 8), tmp_path)
    with pytest.raises(SarmInputError, match="no SAE here"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../etc", "etc"),
        ("/abs/path", "abs-path"),
        ("hub:org/name", "hub-org-name"),
        ("..", "data"),
        ("rewardbench2_safety", "rewardbench2_safety"),
        ("a b\nc", "a-b-c"),
    ],
)
def test_names_made_from_data_are_single_harmless_path_components(text, expected):
    assert file_name(text) == expected


def test_a_manifest_cannot_point_outside_its_cache(tiny_cache, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache["cache"], cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["shards"][1]["file"] = "../../elsewhere.safetensors"
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SarmInputError, match=r"field 'shards\[1\]\.file': '\.\./\.\./elsewhere\.safetensors'"):
        ActivationCache(cache).last_token_activations()
