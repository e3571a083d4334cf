"""The SAELens 6 layout sarm writes: ``SAE.load_from_disk(dir)`` loads a sarm SAE as it is.

Every sarm SAE on disk is, after the folds of ``sarm.sae.whitening.fold_whitening`` (PCA whitening and
the scalar scale), the plain form SAELens computes with ``apply_b_dec_to_input = true``:

    pre = (x' - b_dec) @ W_enc + b_enc,   f = act(pre),   x̂' = f @ W_dec + b_dec

    sarm                   SAELens 6 ``architecture`` and tensors
    topk (k)               "topk", k, rescale_acts_by_decoder_norm = false
    batchtopk (k, θ ≥ 0)   "jumprelu", threshold [d_sae] = θ for every latent (ReLU(pre)·1[pre > θ] = pre·1[pre > θ]);
                           k under metadata.training_architecture_details, where SAELens's own BatchTopK runs keep it
    matryoshka_batchtopk   as batchtopk; training_architecture "matryoshka_batchtopk" with k and the prefix ends
                           (``matryoshka_widths``) under training_architecture_details, as SAELens records its own
    relu                   "standard"
    jumprelu (θ_i)         "jumprelu", threshold [d_sae]; sarm's bandwidth ε under metadata.sarm

Input standardization. sarm's ``input_norm = "standardize"`` is x' = (x − μ)/(σ + 1e-6), σ the *population*
std over the hidden dimension (``sarm.sae.base.standardize``). SAELens's ``normalize_activations = "layer_norm"``
computes x'' = (x − μ)/(s + 1e-5) with the *unbiased* s = c·σ, c = √(d/(d−1)), and maps its reconstruction back
with x̂ = x̂''·s + μ. The constant c folds exactly, as SAELens folds its own constant scales
(``fold_activation_norm_scaling_factor``):

    W_enc ← c·W_enc,   W_dec ← W_dec / c,   b_dec ← b_dec / c

so SAELens's pre-activation is (c·x'' − b_dec) @ W_enc + b_enc and its raw-space reconstruction is
(f @ W_dec + b_dec)·σ + μ. The epsilons cannot be folded: SAELens's c·x'' = (x − μ)/(σ + 1e-5/c) against sarm's
(x − μ)/(σ + 1e-6), a relative difference below ``LAYER_NORM_RELATIVE_GAP / σ`` = 9e-6/σ in every standardized
input. On SmolLM2-135M's layer-15 residual stream σ ≥ 4.4 on every token, so below 2e-6: float32's own rounding
of a 576-term dot product. Tokens with σ ≲ 1e-3 (which residual streams do not have) would see a visible gap.

The folded tensors (W_enc, W_dec, b_dec of a standardized SAE) are stored in float64: sarm divides the fold
back out and gets its float32 weights bit for bit; SAELens casts them to ``dtype`` (float32) on load.

Provenance lives in ``metadata``, which SAELens keeps through a load and a save: ``model_name`` (a hub id or
path; the embedded GGUF as the hub model it quantizes), ``hook_name`` in TransformerLens's convention
(``blocks.{L-1}.hook_resid_post``: sarm's layer L is the residual stream after L decoder layers, i.e. after
block L − 1 counted from 0), ``hf_hook_name`` (``model.layers.{L-1}``: the transformers module whose output
that is), ``context_size``, and ``metadata.sarm``: sarm's own architecture, input_norm, k, backbone spec and
layer, from which sarm reads the SAE back exactly.
"""

from __future__ import annotations

import math
import re

import torch

from sarm.backbone import hub_id
from sarm.errors import SarmInputError
from sarm.files import Fields
from sarm.sae.base import EPS, SparseAutoencoder
from sarm.sae.topk import BatchTopKSAE

# The SAELens release this layout was checked against (tests/peers); SAELens reads any layout >= 6.0 as 6.x.
SAELENS_VERSION = "6.54.12"
SAELENS_LAYER_NORM_EPS = 1e-5  # sae_lens.saes.sae.SAE._setup_activation_normalization
LAYER_NORM_RELATIVE_GAP = SAELENS_LAYER_NORM_EPS - EPS  # ≥ (1e-5/c − 1e-6): the bound above, times σ
SAELENS_ARCHITECTURE = {
    "topk": "topk",
    "batchtopk": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
    "relu": "standard",
    "jumprelu": "jumprelu",
}
PROVENANCE_KEYS = ("model_name", "hook_layer", "context_size")  # sarm's spelling: backbone spec, L, max_length


def unbiased_std_factor(d_in: int) -> float:
    """c = √(d/(d−1)): the unbiased std over d values is c times the population std."""
    return math.sqrt(d_in / (d_in - 1))


def hook_names(layer: int) -> dict:
    """Where sarm's layer L (the residual stream after L decoder layers) is, in TransformerLens and transformers."""
    return {"hook_name": f"blocks.{layer - 1}.hook_resid_post", "hf_hook_name": f"model.layers.{layer - 1}"}


def layer_of_hook(name: str) -> int:
    """sarm's layer L for a residual-stream hook name; anything that is not the residual stream is refused."""
    for pattern, offset in (
        (r"blocks\.(\d+)\.hook_resid_post", 1),
        (r"blocks\.(\d+)\.hook_resid_pre", 0),
        (r"model\.layers\.(\d+)", 1),
    ):
        match = re.fullmatch(pattern, name)
        if match:
            return int(match.group(1)) + offset
    raise SarmInputError(
        f"the SAE reads '{name}', which is not the residual stream between decoder layers that sarm caches "
        "(blocks.N.hook_resid_post, blocks.N.hook_resid_pre or model.layers.N)"
    )


def saelens_files(sae: SparseAutoencoder, provenance: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(cfg.json, tensors) of ``sae`` in the SAELens 6 layout; see the module docstring.

    ``provenance``: ``model_name`` (sarm's backbone spec), ``hook_layer`` (L), ``context_size`` (max_length);
    any other key is kept under ``metadata.sarm``.
    """
    threshold = getattr(sae, "threshold", None)
    batch_topk = isinstance(sae, BatchTopKSAE)  # Matryoshka included
    if batch_topk and float(threshold) < 0:
        raise ValueError(
            "a BatchTopK SAE without an inference threshold (it has not trained a step) has no per-token rule "
            "to save: train it first"
        )
    tensors = {name: getattr(sae, name).detach().cpu() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    standardized = sae.input_norm == "standardize"
    if standardized:  # fold c in float64 (see the module docstring)
        c = unbiased_std_factor(sae.d_in)
        tensors["W_enc"] = tensors["W_enc"].double() * c
        tensors["W_dec"] = tensors["W_dec"].double() / c
        tensors["b_dec"] = tensors["b_dec"].double() / c
    if threshold is not None:
        tensors["threshold"] = threshold.detach().cpu().float().expand(sae.n_latents).clone()

    provenance = dict(provenance or {})
    model, layer, context = (provenance.pop(key, None) for key in PROVENANCE_KEYS)
    ours = {"architecture": sae.architecture, "input_norm": sae.input_norm}
    if hasattr(sae, "k"):
        ours["k"] = sae.k
    if hasattr(sae, "bandwidth"):
        ours["bandwidth"] = sae.bandwidth
    if standardized:
        ours["standardize"] = {"eps": EPS, "std": "population", "saelens_layer_norm_fold": c}
    ours |= {"backbone": model, "layer": layer, **provenance}
    metadata = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None}
    if model is not None:
        metadata["model_name"] = hub_id(model)
    if layer is not None:
        metadata |= hook_names(int(layer))
    if context is not None:
        metadata["context_size"] = context
    if batch_topk:
        details = {"k": sae.k}
        if hasattr(sae, "widths"):
            details["matryoshka_widths"] = list(sae.widths)
        metadata |= {"training_architecture": sae.architecture, "training_architecture_details": details}
    metadata["sarm"] = {k: v for k, v in ours.items() if v is not None}

    cfg = {
        "architecture": SAELENS_ARCHITECTURE[sae.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm" if standardized else "none",
        "reshape_activations": "none",
    }
    if sae.architecture == "topk":
        cfg |= {"k": sae.k, "rescale_acts_by_decoder_norm": False}
    return {**cfg, "metadata": metadata}, tensors


def sarm_section(fields: Fields) -> Fields | None:
    """``metadata.sarm`` of a cfg.json sarm wrote in the SAELens 6 layout, or None."""
    if not isinstance(fields.data.get("metadata"), dict) or "sarm" not in fields.data["metadata"]:
        return None
    return fields.section("metadata").section("sarm")


def trained_on(fields: Fields) -> dict:
    """{"model", "layer"} an SAE's cfg.json says it was trained on, in sarm's terms (backbone spec or hub id, L);
    None where it does not say. Read from, in order: sarm's ``metadata.sarm``; an older sarm export's top-level
    ``model_name`` / ``hook_layer``; SAELens's ``metadata.model_name`` / ``hook_name`` (≥ 6) or top-level
    ``model_name`` / ``hook_name`` / ``hook_point`` (< 6)."""
    ours = sarm_section(fields)
    if ours is not None:
        return {
            "model": ours.text("backbone", None, nullable=True),
            "layer": ours.integer("layer", low=1, default=None, nullable=True),
        }
    if "input_norm" in fields:  # an older sarm export
        return {
            "model": fields.text("model_name", None, nullable=True),
            "layer": fields.integer("hook_layer", low=0, default=None, nullable=True),
        }
    source = fields.section("metadata") if isinstance(fields.data.get("metadata"), dict) else fields
    hook = source.text("hook_name", None, nullable=True) or fields.text("hook_point", None, nullable=True)
    if hook is None:
        hook = source.text("hf_hook_name", None, nullable=True)
    return {
        "model": source.text("model_name", None, nullable=True),
        "layer": None if hook is None else layer_of_hook(hook),
    }
