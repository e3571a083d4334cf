"""A trained reward model on disk, loadable without Lightning.

    <dir>/sarm.json              what it is: kind (sarm | dense | residual_sarm), pooling, features, backbone
                                 (model id or path, layer, max_length), how the backbone's weights
                                 are stored, reward normalization (val mean, std), metrics
    <dir>/head.safetensors       {"weight": [n_features]}
    <dir>/sae/                   the SAE (cfg.json + sae_weights.safetensors), for kinds "sarm" and "residual_sarm"
    <dir>/residual.safetensors   {"weight": [hidden]}: the dense residual v, for kind "residual_sarm"
    <dir>/adapter/               LoRA adapters (peft layout), when trained with LoRA and not merged
    <dir>/backbone/              the truncated backbone with the adapters merged, when merged

A residualized SARM (``sarm.reward.residual``) adds to ``sarm.json``: ``sae_dir`` ("sae"), ``residual_size``
(the hidden width v reads), ``residual`` {"standardize": "per_token", "eps"}: how h̃ is made from h. That
standardization is per token and stateless (``sarm.sae.base.standardize``, as ``DenseNetwork`` applies it), so
there are no stored statistics, only its definition; ``feature_share``: the val feature share of the fit (or null).

A frozen backbone is referenced by id/path, not copied. ``sarm.json`` is written last: a directory
holding it is complete.

Loading checks every part (``sarm.files``): each ``sarm.json`` field's type and range, the head's
presence, shape and finiteness, the SAE's files; a part at fault is named in one error, e.g.
``<dir>/sarm.json: field 'reward_norm.std': expected a finite number > 0, got 0.0``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sarm.cache.layout import COMPUTE_DTYPES, DEFAULT_COMPUTE_DTYPE
from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object, read_tensors
from sarm.io import save_tensors, write_json
from sarm.reward.network import DenseNetwork, RewardNetwork, SARMNetwork
from sarm.reward.residual import ResidualSARMNetwork
from sarm.sae.base import EPS
from sarm.sae.io import load_sae, save_sae

CONFIG, HEAD, SAE_DIR, ADAPTER_DIR, BACKBONE_DIR = "sarm.json", "head.safetensors", "sae", "adapter", "backbone"
RESIDUAL = "residual.safetensors"
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
    feature_share: float | None = None,
) -> Path:
    """Write ``network`` (and the backbone's trained adapters, if any) to ``directory``.

    ``feature_share``: for a ``ResidualSARMNetwork``, its val feature share (``sarm.reward.residual``), recorded
    in ``sarm.json``; ignored for the other kinds."""
    from sarm.reward.lora import has_lora

    directory = Path(directory)
    (directory / CONFIG).unlink(missing_ok=True)  # incomplete until rewritten
    weights = "reference"
    residual = isinstance(network, ResidualSARMNetwork)
    head = network.sarm.head if residual else network.head
    extra = {}
    # The SAE's copy says where its activations came from, as the SAE's own export does: the backbone it was
    # trained on (check_backbone held the data to it) over what its file recorded.
    provenance = {
        key: backbone_settings.get(setting)
        for key, setting in (("model_name", "model"), ("hook_layer", "layer"), ("context_size", "max_length"))
        if backbone_settings.get(setting) is not None
    }
    if residual:
        save_sae(network.sarm.sae, directory / SAE_DIR, extra=provenance)
        save_tensors(directory / RESIDUAL, {"weight": network.residual.head.weight.detach().cpu()})
        extra = {
            "sae_dir": SAE_DIR,
            "residual": {"standardize": "per_token", "eps": EPS},
            "feature_share": None if feature_share is None else float(feature_share),
        }
    elif isinstance(network, SARMNetwork):
        save_sae(network.sae, directory / SAE_DIR, extra=provenance)
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
    save_tensors(directory / HEAD, {"weight": head.weight.detach().cpu()})
    write_json(
        directory / CONFIG,
        {
            **network.config(),
            **extra,
            "mode": mode,
            "backbone": {**backbone_settings, "weights": weights},
            "head_nonzero": head.nonzero(),
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


def compute_dtype(config: dict) -> str:
    """The dtype the model's training activations were computed in (``sarm.json`` ``backbone.compute_dtype``; a
    model exported before the setting existed: float32)."""
    return config["backbone"].get("compute_dtype", DEFAULT_COMPUTE_DTYPE)


def check_config(config: Fields) -> None:
    """The fields loaders and ``sarm score`` use, each of the right type and in range. Only ``metrics``,
    ``mode`` and ``head_nonzero`` (written for people, read by nothing) go unchecked."""
    kind = config.choice("kind", ("sarm", "dense", "residual_sarm"))
    config.choice("pooling", ("last", "mean"))
    config.choice("features", ("latents", "pre"), default="latents")
    if kind == "dense":
        config.integer("n_features", low=1)  # the head's width, which nothing else records
    else:
        config.integer("n_features", low=1, default=None)  # the SAE's width decides; checked by the head's shape
    if kind == "residual_sarm":
        config.integer("residual_size", low=1)  # the width v reads: the SAE's input width, checked at load
        config.number("feature_share", low=0.0, high=1.0, default=None, nullable=True)
        residual = config.section("residual", {})
        residual.choice("standardize", ("per_token",), default="per_token")
        residual.number("eps", low=0.0, default=EPS)
    backbone = config.section("backbone")
    backbone.text("model", default=None)
    backbone.integer("layer", low=1, default=None)
    backbone.integer("max_length", low=1, default=None, nullable=True)
    backbone.choice("weights", ("reference", "adapter", "merged"), default="reference")
    backbone.choice("compute_dtype", COMPUTE_DTYPES, default=DEFAULT_COMPUTE_DTYPE)
    norm = config.section("reward_norm", {})
    norm.number("mean", default=0.0)
    norm.number("std", positive=True, default=1.0)  # rewards are divided by it


def load_network(directory: str | Path) -> tuple[RewardNetwork, dict]:
    """The reward network (SAE + head, the dense head, or a ``ResidualSARMNetwork``) of an exported model, and its
    config."""
    directory = Path(directory)
    config = read_config(directory)
    if config["kind"] == "residual_sarm":
        return _load_residual(directory, config), config
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


def _read_head(path: Path, width: int, what: str) -> torch.Tensor:
    """The ``weight`` [width] of the safetensors file ``path`` (nothing else in it), or a named error."""
    tensors = read_tensors(path, missing=INCOMPLETE)
    weight = tensors.get("weight", (width,))
    tensors.refuse_unknown({"weight"}, f"not part of {what} (it holds only 'weight')")
    return weight


def _load_residual(directory: Path, config: dict) -> ResidualSARMNetwork:
    """SAE + w (``head.safetensors``) + v (``residual.safetensors``), each file checked."""
    if not (directory / SAE_DIR).is_dir():
        raise SarmInputError(f"{directory / SAE_DIR}: missing ({INCOMPLETE})")
    sarm = SARMNetwork(load_sae(directory / SAE_DIR), config["pooling"], config.get("features", "latents"))
    if config["residual_size"] != sarm.input_size():
        raise Fields(config, directory / CONFIG).error(
            "residual_size", f"expected the SAE's input width {sarm.input_size()}, got {config['residual_size']}"
        )
    network = ResidualSARMNetwork(sarm, DenseNetwork(sarm.input_size(), config["pooling"]))
    network.sarm.head.weight.data.copy_(_read_head(directory / HEAD, sarm.head.weight.numel(), "a reward head"))
    network.residual.head.weight.data.copy_(_read_head(directory / RESIDUAL, sarm.input_size(), "a residual head"))
    return network
