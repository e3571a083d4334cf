"""A trained reward model on disk, loadable without Lightning.

    <dir>/sarm.json              what it is: kind (sarm | dense), pooling, features, backbone
                                 (model id or path, layer, max_length), how the backbone's weights
                                 are stored, reward normalization (val mean, std), metrics
    <dir>/head.safetensors       {"weight": [n_features]}
    <dir>/sae/                   the SAE (cfg.json + sae_weights.safetensors), for kind "sarm"
    <dir>/adapter/               LoRA adapters (peft layout), when trained with LoRA and not merged
    <dir>/backbone/              the truncated backbone with the adapters merged, when merged

A frozen backbone is referenced by id/path, not copied. ``sarm.json`` is written last: a directory
holding it is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.reward.network import DenseNetwork, RewardNetwork, SARMNetwork
from sarm.sae.io import load_sae, save_sae

CONFIG, HEAD, SAE_DIR, ADAPTER_DIR, BACKBONE_DIR = "sarm.json", "head.safetensors", "sae", "adapter", "backbone"


def save_reward_model(directory: str | Path, network: RewardNetwork, backbone_settings: dict, backbone=None, *,
                      metrics: dict | None = None, reward_norm: list[float] | None = None, mode: str = "head",
                      merge_lora: bool = False) -> Path:
    """Write ``network`` (and the backbone's trained adapters, if any) to ``directory``."""
    from sarm.reward.lora import has_lora

    directory = Path(directory)
    (directory / CONFIG).unlink(missing_ok=True)  # incomplete until rewritten
    weights = "reference"
    if isinstance(network, SARMNetwork):
        save_sae(network.sae, directory / SAE_DIR)
    if has_lora(backbone):
        for stale in (ADAPTER_DIR, BACKBONE_DIR):
            shutil.rmtree(directory / stale, ignore_errors=True)
        if merge_lora:
            backbone.model = backbone.model.merge_and_unload()
            backbone.model.save_pretrained(directory / BACKBONE_DIR)
            weights = "merged"
        else:
            backbone.model.save_pretrained(directory / ADAPTER_DIR)
            weights = "adapter"
    save_tensors(directory / HEAD, {"weight": network.head.weight.detach().cpu()})
    write_json(directory / CONFIG, {
        **network.config(),
        "mode": mode,
        "backbone": {**backbone_settings, "weights": weights},
        "head_nonzero": network.head.nonzero(),
        "reward_norm": {"mean": (reward_norm or [0.0, 1.0])[0], "std": (reward_norm or [0.0, 1.0])[1]},
        "metrics": metrics or {},
    })
    return directory


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise SarmInputError(f"{path}: no trained reward model here (expected {CONFIG} beside {HEAD})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SarmInputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    for field in ("kind", "pooling", "backbone"):
        if field not in config:
            raise SarmInputError(f"{path}: field '{field}': missing")
    return config


def load_network(directory: str | Path) -> tuple[RewardNetwork, dict]:
    """The reward network (SAE + head, or the dense head) of an exported model, and its config."""
    directory = Path(directory)
    config = read_config(directory)
    if config["kind"] == "sarm":
        network = SARMNetwork(load_sae(directory / SAE_DIR), config["pooling"], config.get("features", "latents"))
    elif config["kind"] == "dense":
        network = DenseNetwork(config["n_features"], config["pooling"])
    else:
        raise SarmInputError(f"{directory / CONFIG}: field 'kind': {config['kind']!r} is not 'sarm' or 'dense'")
    weight = load_file(directory / HEAD)["weight"]
    if weight.shape != network.head.weight.shape:
        raise SarmInputError(f"{directory / HEAD}: head has {weight.numel()} weights, "
                             f"the network has {network.head.weight.numel()} features")
    network.head.weight.data.copy_(weight)
    return network, config
