"""Save and load SAEs: ``cfg.json`` + ``sae_weights.safetensors`` (the SAELens layout)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.sae.topk import TopKSAE

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


def save_sae(sae: TopKSAE, directory: str | Path, extra: dict | None = None) -> Path:
    directory = Path(directory)
    save_tensors(directory / WEIGHTS, {k: v.detach().cpu() for k, v in sae.state_dict().items()})
    # The config goes last: a directory with a cfg.json holds complete weights.
    write_json(directory / CFG, {**sae.config(), **(extra or {})})
    return directory


def load_sae(directory: str | Path) -> TopKSAE:
    directory = Path(directory)
    cfg_path = directory / CFG
    if not cfg_path.is_file():
        raise SarmInputError(f"{cfg_path}: no SAE config here (expected {CFG} and {WEIGHTS})")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("architecture") != "topk":
        raise SarmInputError(f"{cfg_path}: field 'architecture': {cfg.get('architecture')!r} is not supported yet")
    try:
        sae = TopKSAE(cfg["d_in"], cfg["d_sae"], cfg["k"], cfg.get("input_norm", "none"))
    except KeyError as e:
        raise SarmInputError(f"{cfg_path}: field '{e.args[0]}': missing") from None
    sae.load_state_dict(load_file(directory / WEIGHTS))
    return sae


def read_sae_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CFG).read_text())
