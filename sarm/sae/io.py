"""Save and load SAEs.

sarm writes the SAELens layout: ``cfg.json`` (with an ``architecture`` field) + ``sae_weights.safetensors``
holding ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``. ``load_sae`` also reads SAEs written by SAELens
and by EleutherAI's sparsify (``sarm.sae.interop``), so a SARM can sit on an SAE a user already has.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.sae.base import SparseAutoencoder
from sarm.sae.interop import detect_layout, load_saelens, load_sparsify
from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


def build_sae(architecture: str, d_in: int, n_latents: int, k: int | None = None,
              input_norm: str = "standardize") -> SparseAutoencoder:
    """The one place an architecture name becomes an SAE."""
    if architecture == "topk":
        return TopKSAE(d_in, n_latents, k, input_norm)
    if architecture == "batchtopk":
        return BatchTopKSAE(d_in, n_latents, k, input_norm)
    if architecture == "relu":
        return ReLUSAE(d_in, n_latents, input_norm)
    raise SarmInputError(f"architecture = {architecture!r}: expected 'topk', 'batchtopk' or 'relu'")


def save_sae(sae: SparseAutoencoder, directory: str | Path, extra: dict | None = None) -> Path:
    directory = Path(directory)
    (directory / CFG).unlink(missing_ok=True)  # incomplete until rewritten: never new weights under an old config
    # Only the four SAELens parameters: training-time buffers (latent masks) are not part of the SAE.
    save_tensors(directory / WEIGHTS, {k: getattr(sae, k).detach().cpu() for k in PARAMETERS})
    # The config goes last: a directory with a cfg.json holds complete weights.
    write_json(directory / CFG, {**sae.config(), **(extra or {})})
    return directory


def load_sae(directory: str | Path) -> SparseAutoencoder:
    """Load an SAE written by sarm, SAELens or sparsify (detected from the files present)."""
    directory = Path(directory)
    layout = detect_layout(directory)
    if layout == "saelens":
        return load_saelens(directory)
    if layout == "sparsify":
        return load_sparsify(directory)
    cfg_path = directory / CFG
    cfg = json.loads(cfg_path.read_text())
    try:
        sae = build_sae(cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg.get("k"), cfg.get("input_norm", "none"))
    except KeyError as e:
        raise SarmInputError(f"{cfg_path}: field '{e.args[0]}': missing") from None
    weights = load_file(directory / WEIGHTS)
    sae.load_state_dict({k: weights[k] for k in PARAMETERS}, strict=False)
    if isinstance(sae, BatchTopKSAE) and cfg.get("threshold") is not None:
        sae.threshold.fill_(cfg["threshold"])
    return sae.eval()
