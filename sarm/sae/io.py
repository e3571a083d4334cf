"""Save and load SAEs.

sarm writes the SAELens 6 layout (``sarm.sae.saelens_layout``): ``cfg.json`` + ``sae_weights.safetensors``
that SAELens's ``SAE.load_from_disk`` loads as they are, with sarm's own settings and the activations'
provenance under ``metadata``. ``load_sae`` reads it back with the SAELens reader
(``sarm.sae.interop.load_saelens``), which checks every field and tensor (type, range, shape,
finiteness) and names the one at fault; it also reads SAEs written by SAELens and by EleutherAI's
sparsify, and sarm's older exports (sarm's names and ``input_norm`` at the top level of cfg.json), so a
SARM can sit on an SAE a user already has.

A loaded SAE keeps the provenance its file records (``sae.provenance``: ``model_name``, ``hook_layer``,
``context_size`` in sarm's terms), and ``save_sae`` writes it again, so a copy (the SAE inside an exported
SARM) says where its activations came from as the original does.
"""

from __future__ import annotations

from pathlib import Path

from sarm.errors import SarmInputError
from sarm.io import save_tensors, write_json
from sarm.sae.base import SparseAutoencoder
from sarm.sae.interop import detect_layout, load_saelens, load_sparsify
from sarm.sae.jumprelu import JumpReLUSAE
from sarm.sae.matryoshka import MatryoshkaBatchTopKSAE
from sarm.sae.relu import ReLUSAE
from sarm.sae.saelens_layout import saelens_files
from sarm.sae.topk import BatchTopKSAE, TopKSAE

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "relu")


def build_sae(
    architecture: str,
    d_in: int,
    n_latents: int,
    k: int | None = None,
    input_norm: str = "standardize",
    matryoshka_widths: list[int] | None = None,
    jumprelu_bandwidth: float = 0.05,
) -> SparseAutoencoder:
    """The one place an architecture name becomes an SAE (``matryoshka_widths``: Matryoshka's prefix ends;
    ``jumprelu_bandwidth``: JumpReLU's ε)."""
    if architecture == "topk":
        return TopKSAE(d_in, n_latents, k, input_norm)
    if architecture == "batchtopk":
        return BatchTopKSAE(d_in, n_latents, k, input_norm)
    if architecture == "matryoshka_batchtopk":
        return MatryoshkaBatchTopKSAE(d_in, n_latents, k, input_norm, widths=matryoshka_widths)
    if architecture == "jumprelu":
        return JumpReLUSAE(d_in, n_latents, input_norm, bandwidth=jumprelu_bandwidth)
    if architecture == "relu":
        return ReLUSAE(d_in, n_latents, input_norm)
    raise SarmInputError(f"architecture = {architecture!r}: expected one of {', '.join(map(repr, ARCHITECTURES))}")


def save_sae(sae: SparseAutoencoder, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``sae`` in the SAELens 6 layout. ``extra``: provenance (``model_name`` = sarm's backbone spec,
    ``hook_layer`` = L, ``context_size``) over what ``sae.provenance`` already holds; other keys are kept
    under ``metadata.sarm``."""
    directory = Path(directory)
    (directory / CFG).unlink(missing_ok=True)  # incomplete until rewritten: never new weights under an old config
    # The SAELens parameters (+ threshold): training-time buffers (latent masks) are not part of the SAE.
    cfg, tensors = saelens_files(sae, {**getattr(sae, "provenance", {}), **(extra or {})})
    save_tensors(directory / WEIGHTS, tensors)
    # The config goes last: a directory with a cfg.json holds complete weights.
    write_json(directory / CFG, cfg)
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
