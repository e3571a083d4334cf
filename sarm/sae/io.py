"""Save and load SAEs.

sarm writes the SAELens layout: ``cfg.json`` (with an ``architecture`` field) + ``sae_weights.safetensors``
holding ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``. ``load_sae`` reads it back with the SAELens reader
(``sarm.sae.interop.load_saelens``), which checks every field and tensor (type, range, shape,
finiteness) and names the one at fault; it also reads SAEs written by SAELens and by EleutherAI's
sparsify, so a SARM can sit on an SAE a user already has.
"""

from __future__ import annotations

from pathlib import Path

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.sae.base import SparseAutoencoder
from sarm.sae.interop import detect_layout, load_saelens, load_sparsify
from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


def build_sae(
    architecture: str, d_in: int, n_latents: int, k: int | None = None, input_norm: str = "standardize"
) -> SparseAutoencoder:
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
    """Load an SAE written by sarm, SAELens or sparsify (detected from the files present).

    sarm's own files are a case of the SAELens layout (its ``relu``/``topk``/``batchtopk``
    architectures, its ``input_norm`` and BatchTopK ``threshold``), read by the same checked loader.
    """
    directory = Path(directory)
    if detect_layout(directory) == "sparsify":
        return load_sparsify(directory)
    return load_saelens(directory)
