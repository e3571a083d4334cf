"""A trained SARM on disk, loadable without Lightning.

    <dir>/sarm.json              backbone (model, layer, max_length), head sparsity, metrics
    <dir>/head.safetensors       {"weight": [n_latents]}
    <dir>/sae/                   the frozen SAE (cfg.json + sae_weights.safetensors)
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.reward.head import SparseRewardHead
from sarm.sae.io import load_sae, save_sae
from sarm.sae.topk import TopKSAE

CONFIG, HEAD, SAE_DIR = "sarm.json", "head.safetensors", "sae"


def save_sarm(directory: str | Path, sae: TopKSAE, head: SparseRewardHead, backbone: dict, metrics: dict) -> Path:
    directory = Path(directory)
    save_sae(sae, directory / SAE_DIR)
    save_tensors(directory / HEAD, {"weight": head.weight.detach().cpu()})
    weight = head.weight.detach()
    write_json(directory / CONFIG, {
        "backbone": backbone,
        "sae": SAE_DIR,
        "head": HEAD,
        "n_latents": weight.numel(),
        "head_nonzero": int((weight != 0).sum()),
        "metrics": metrics,
    })  # last: a directory with sarm.json is complete
    return directory


def load_sarm(directory: str | Path) -> tuple[TopKSAE, SparseRewardHead, dict]:
    directory = Path(directory)
    path = directory / CONFIG
    if not path.is_file():
        raise SarmInputError(f"{path}: no trained SARM here (expected {CONFIG}, {HEAD} and {SAE_DIR}/)")
    config = json.loads(path.read_text())
    sae = load_sae(directory / config["sae"])
    weight = load_file(directory / config["head"])["weight"]
    if weight.numel() != sae.n_latents:
        raise SarmInputError(f"{directory / config['head']}: head has {weight.numel()} weights, SAE has {sae.n_latents} latents")
    head = SparseRewardHead(sae.n_latents)
    head.weight.data.copy_(weight)
    return sae, head, config
