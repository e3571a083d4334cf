"""Every `sarm fit` config in configs/ runs its own code path on a tiny model: same classes, same
options (modes, pooling, features, strategies' single-device equivalent), tiny sizes and data."""

from pathlib import Path

import pytest
import torch
import yaml

from sarm.cli import main
from sarm.sae import TopKSAE, save_sae

ROOT = Path(__file__).resolve().parents[1]
FIT_CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if p.read_text().startswith("# sarm fit") and p.parent.name != "sae"
)  # configs/sae: test_sae_configs


@pytest.fixture(scope="module")
def tiny_sae(tiny_cache, tmp_path_factory, tiny_model_dir):
    torch.manual_seed(0)
    return str(
        save_sae(
            TopKSAE(32, 64, 4),
            tmp_path_factory.mktemp("hub") / "sae",
            extra={"model_name": tiny_model_dir, "hook_layer": 2},
        )
    )


@pytest.fixture(scope="module")
def tiny_sarm(tiny_sae, tiny_model_dir, tmp_path_factory):
    """An exported head-only SARM on the tiny SAE, for configs that restart from one (init_from)."""
    from sarm.reward.export import save_reward_model
    from sarm.reward.network import SARMNetwork
    from sarm.sae import load_sae

    network = SARMNetwork(load_sae(tiny_sae), "last", "pre")
    return str(
        save_reward_model(
            tmp_path_factory.mktemp("hub") / "sarm", network, {"model": tiny_model_dir, "layer": 2, "max_length": 48}
        )
    )


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_fit_config_runs_on_a_tiny_model(path, tiny_cache, tiny_sae, tiny_sarm, tiny_model_dir, tmp_path, monkeypatch):
    config = yaml.safe_load(path.read_text())
    model_class, data_class = config["model"]["class_path"], config["data"]["class_path"]
    args = [
        "fit",
        "--config",
        str(path.relative_to(ROOT)),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--trainer.precision",
        "32-true",
        "--trainer.fast_dev_run",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--model.init_args.export_dir",
        str(tmp_path / "export"),
    ]
    if model_class == "sarm.sae.SAEModule":
        args += ["--model.init_args.n_latents", "64", "--model.init_args.k", "4"]
    if "init_from" in config["model"]["init_args"]:  # a second stage: restarts from an exported SARM
        args += ["--model.init_args.init_from", tiny_sarm]
    elif model_class in ("sarm.reward.SARM", "sarm.reward.ResidualSARM"):
        args += ["--model.init_args.sae", tiny_sae]
    if config["model"]["init_args"].get("lora_layers"):
        args += ["--model.init_args.lora_layers", "1"]
    if data_class.endswith("PairTextDataModule"):
        args += [
            "--data.init_args.data",
            str(tiny_cache["data"]),
            "--data.init_args.model",
            tiny_model_dir,
            "--data.init_args.layer",
            "2",
            "--data.init_args.max_length",
            "48",
        ]
    else:
        args += ["--data.init_args.cache_dir", str(tiny_cache["cache"])]
    monkeypatch.chdir(ROOT)
    main(args)
    assert (tmp_path / "export").is_dir()  # trained and exported through the config's own classes
