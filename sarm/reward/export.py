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

Loading checks every part (``sarm.files``): each ``sarm.json`` field's type and range, the head's
presence, shape and finiteness, the SAE's files; a part at fault is named in one error, e.g.
``<dir>/sarm.json: field 'reward_norm.std': expected a finite number > 0, got 0.0``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object, read_tensors
from sarm.io import save_tensors, write_json
from sarm.reward.network import DenseNetwork, RewardNetwork, SARMNetwork
from sarm.sae.io import load_sae, save_sae

CONFIG, HEAD, SAE_DIR, ADAPTER_DIR, BACKBONE_DIR = "sarm.json", "head.safetensors", "sae", "adapter", "backbone"
INCOMPLETE = "an incomplete export?"


def save_reward_model(
    directory: str | Path,
    network: RewardNetwork,
    backbone_settings: dict,
    backbone=None,
    *,
    metrics: dict | None = None,
    reward_norm: list[float] | None = None,
    mode: str = "head",
    merge_lora: bool = False,
) -> Path:
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
    write_json(
        directory / CONFIG,
        {
            **network.config(),
            "mode": mode,
            "backbone": {**backbone_settings, "weights": weights},
            "head_nonzero": network.head.nonzero(),
            "reward_norm": {"mean": (reward_norm or [0.0, 1.0])[0], "std": (reward_norm or [0.0, 1.0])[1]},
            "metrics": metrics or {},
        },
    )
    return directory


def read_config(directory: str | Path) -> dict:
    """``sarm.json`` of an exported model, every field it is read for checked (``check_config``)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise SarmInputError(f"{path}: no trained reward model here (expected {CONFIG} beside {HEAD})")
    config = read_json_object(path)
    check_config(Fields(config, path))
    return config


def check_config(config: Fields) -> None:
    """The fields loaders and ``sarm score`` use, each of the right type and in range. Only ``metrics``,
    ``mode`` and ``head_nonzero`` (written for people, read by nothing) go unchecked."""
    kind = config.choice("kind", ("sarm", "dense"))
    config.choice("pooling", ("last", "mean"))
    config.choice("features", ("latents", "pre"), default="latents")
    if kind == "dense":
        config.integer("n_features", low=1)  # the head's width, which nothing else records
    else:
        config.integer("n_features", low=1, default=None)  # the SAE's width decides; checked by the head's shape
    backbone = config.section("backbone")
    backbone.text("model", default=None)
    backbone.integer("layer", low=1, default=None)
    backbone.integer("max_length", low=1, default=None, nullable=True)
    backbone.choice("weights", ("reference", "adapter", "merged"), default="reference")
    norm = config.section("reward_norm", {})
    norm.number("mean", default=0.0)
    norm.number("std", positive=True, default=1.0)  # rewards are divided by it


def load_network(directory: str | Path) -> tuple[RewardNetwork, dict]:
    """The reward network (SAE + head, or the dense head) of an exported model, and its config."""
    directory = Path(directory)
    config = read_config(directory)
    if config["kind"] == "sarm":
        if not (directory / SAE_DIR).is_dir():
            raise SarmInputError(f"{directory / SAE_DIR}: missing ({INCOMPLETE})")
        network = SARMNetwork(load_sae(directory / SAE_DIR), config["pooling"], config.get("features", "latents"))
    else:
        network = DenseNetwork(config["n_features"], config["pooling"])
    head = read_tensors(directory / HEAD, missing=INCOMPLETE)
    weight = head.get("weight", tuple(network.head.weight.shape))  # as many weights as the network has features
    head.refuse_unknown({"weight"}, "not part of a reward head (it holds only 'weight')")
    network.head.weight.data.copy_(weight)
    return network, config
