"""Read SAEs saved by other libraries: SAELens and EleutherAI's sparsify.

Every loader returns a sarm ``SparseAutoencoder`` (in eval mode) whose outputs equal the other
library's inference formulas exactly; anything that cannot be represented exactly is refused with a
``SarmInputError`` naming the file and the field, as is a file that is corrupt: not JSON, not
safetensors, a field of the wrong type or out of range, a tensor missing, mis-shaped or holding a NaN
or inf (``sarm.files``). All folds are computed in float64, weights end in float32.

SAELens (``cfg.json`` + ``sae_weights.safetensors``; ``SAE.save_model`` / ``load_from_disk``,
checked against ``sae_lens/saes/{sae,standard_sae,topk_sae,batchtopk_sae,jumprelu_sae}.py`` and
``loading/pretrained_sae_loaders.py``):

    weights   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in] (+ threshold ...)
    encode    pre = (x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc,  f = act(pre)
    decode    x̂ = f @ W_dec + b_dec

    architecture  →  sarm class
      "standard"   ReLU                                   → ReLUSAE
                   (SAELens < 6 also wrote TopK SAEs as "standard" with activation_fn_str "topk"
                   and activation_fn_kwargs {"k": k} → TopKSAE)
      "topk"       k from ``k`` or ``activation_fn_kwargs.k`` → TopKSAE
      "batchtopk"  a training checkpoint; k and the scalar ``topk_threshold`` → BatchTopKSAE
      "jumprelu"   f = ReLU(pre) · 1[pre > relu(θ)]. With one θ for every latent (SAELens's final BatchTopK
                   files, sarm's BatchTopK exports) and a known k (``metadata.training_architecture_details.k``,
                   where SAELens 6 records it; sarm's ``metadata.sarm.k``; a top-level ``k``; or ``k=``) it is
                   sarm's BatchTopK inference rule f = pre · 1[pre > θ] → BatchTopKSAE, trainable further
                   (→ MatryoshkaBatchTopKSAE where ``training_architecture_details.matryoshka_widths`` is recorded).
                   Otherwise (per-latent thresholds, e.g. Gemma Scope, or no k anywhere) → JumpReLUSAE, which
                   needs no k: reading features and training a head never use one.
      "relu" / "topk" / "batchtopk" written by older sarm (cfg has a top-level ``input_norm``) load too.

    sarm's own files (``sarm.sae.saelens_layout``) carry ``metadata.sarm``: sarm's architecture, input_norm
    and k, read back as they were written. ``normalize_activations = "layer_norm"`` there is sarm's
    per-token standardization with the unbiased-std factor c folded in (W_enc·c, W_dec/c, b_dec/c); it is
    divided back out (exactly, from the float64 tensors sarm writes) and the SAE standardizes as sarm does.

    Folded on load, each exactly, in this order:
      scaling_factor (SAELens < 6 finetuning scale s_i, decode (f·s) @ W_dec)   W_dec ← s_i · W_dec
      apply_b_dec_to_input = false      b_enc ← b_enc + b_dec @ W_enc
      rescale_acts_by_decoder_norm      (TopK/BatchTopK: pre ← pre·n_i, decode with f/n_i, n_i = ‖W_dec,i‖)
                                        W_enc ← W_enc·n_i, b_enc ← b_enc·n_i, W_dec ← W_dec/n_i
      normalize_activations = "expected_average_only_in": the SAE expects inputs multiplied by a
        dataset constant c that is *not* in the files; pass ``activation_scale=c`` to fold it
        (W_enc ← c·W_enc, W_dec ← W_dec/c, b_dec ← b_dec/c, as SAELens's own fold), else refused.
      normalize_activations = "layer_norm" (unless sarm wrote it, above) / "constant_norm_rescale": per-token
        runtime maps that differ from sarm's ``standardize`` (eps, unbiased std); refused.
    ``reshape_activations = "hook_z"`` only flattens heads; the weights are read as they are.

sparsify (``cfg.json`` + ``sae.safetensors``; ``SparseCoder.save_to_disk`` / ``load_from_disk``,
checked against ``sparsify/{sparse_coder,config,fused_encoder}.py``):

    cfg       d_in, k, num_latents (0 → d_in · expansion_factor), activation "topk",
              transcode / skip_connection / signed false
    weights   encoder.weight [n, d], encoder.bias [n], W_dec [n, d], b_dec [d]
    encode    pre = ReLU((x - b_dec) @ encoder.weightᵀ + encoder.bias), keep the top k
    decode    x̂ = f @ W_dec + b_dec
    → TopKSAE with W_enc = encoder.weightᵀ, b_enc = encoder.bias (ReLU-then-topk and
      topk-then-ReLU give the same dense latents). A training run saves one such folder per
      hookpoint; point the loader at one of them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sarm.errors import SarmInputError
from sarm.files import Fields, Tensors, read_json_object, read_tensors
from sarm.sae.base import SparseAutoencoder
from sarm.sae.jumprelu import JumpReLUSAE
from sarm.sae.matryoshka import MatryoshkaBatchTopKSAE, prefix_widths
from sarm.sae.relu import ReLUSAE
from sarm.sae.saelens_layout import sarm_section, trained_on, unbiased_std_factor
from sarm.sae.topk import BatchTopKSAE, TopKSAE

CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"

# Weight-file keys a SAELens-layout file may hold besides the four matrices and what they mean.
_SAELENS_EXTRA_KEYS = {
    "threshold": "JumpReLU threshold (or sarm's BatchTopK threshold)",
    "log_threshold": "JumpReLU threshold, older SAELens",
    "topk_threshold": "BatchTopK training threshold",
    "scaling_factor": "finetuning scaling factor, SAELens < 6",
    "finetuning_scaling_factor": "finetuning scaling factor, SAELens < 6",
    "latent_mask": "sarm latent mask",
}


def detect_layout(directory: str | Path) -> str:
    """``"sarm"``, ``"saelens"`` or ``"sparsify"``, from the files present (and, for the shared
    SAELens layout, whether ``cfg.json`` carries sarm's ``metadata.sarm``, or an older export's ``input_norm``)."""
    directory = Path(directory)
    cfg_path = directory / CFG
    if cfg_path.is_file() and (directory / SAELENS_WEIGHTS).is_file():
        return "sarm" if _written_by_sarm(Fields(read_json_object(cfg_path), cfg_path)) else "saelens"
    if cfg_path.is_file() and (directory / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    hookpoints = sorted(p.parent.name for p in directory.glob(f"*/{SPARSIFY_WEIGHTS}")) if directory.is_dir() else []
    if hookpoints:
        raise SarmInputError(
            f"{directory}: a sparsify checkpoint with one SAE per hookpoint; "
            f"pass one of its folders: {', '.join(hookpoints)}"
        )
    raise SarmInputError(
        f"{directory}: no SAE here (expected {CFG} with {SAELENS_WEIGHTS} (sarm/SAELens) "
        f"or {SPARSIFY_WEIGHTS} (sparsify))"
    )


# ----------------------------------------------------------------------------- SAELens


def load_saelens(
    directory: str | Path, *, k: int | None = None, activation_scale: float | None = None
) -> SparseAutoencoder:
    """Load a SAELens-layout SAE; see the module docstring for what is mapped and folded.

    Args:
        directory: folder with ``cfg.json`` and ``sae_weights.safetensors``.
        k: TopK budget for a ``jumprelu`` file that records none; ignored when the file has one. Without it
            such a file loads as a ``JumpReLUSAE`` (k is only needed to train a BatchTopK SAE further).
        activation_scale: the dataset constant of ``normalize_activations = "expected_average_only_in"``.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG, directory / SAELENS_WEIGHTS
    fields = Fields(read_json_object(cfg_path), cfg_path)
    cfg, field_error = fields.data, fields.error
    ours = sarm_section(fields)  # metadata.sarm: sarm's own settings, when sarm wrote the file
    weights = read_tensors(weights_path)

    d_in, d_sae = fields.integer("d_in", low=1), fields.integer("d_sae", low=1)
    weights.refuse_unknown(
        {"W_enc", "b_enc", "W_dec", "b_dec", *_SAELENS_EXTRA_KEYS}, "not part of any SAE architecture sarm reads"
    )
    W_enc = _tensor(weights, "W_enc", (d_in, d_sae))
    b_enc = _tensor(weights, "b_enc", (d_sae,))
    W_dec = _tensor(weights, "W_dec", (d_sae, d_in))
    b_dec = _tensor(weights, "b_dec", (d_in,))

    architecture = cfg.get("architecture", "standard")
    activation_fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if architecture in ("standard", "relu") and activation_fn == "topk":
        architecture = "topk"  # SAELens < 6 wrote TopK SAEs as "standard" + activation_fn_str "topk"
    elif architecture == "standard" and activation_fn != "relu":
        raise field_error("activation_fn_str", f"{activation_fn!r} is not supported (only 'relu' and 'topk')")
    supported = ("standard", "relu", "topk", "batchtopk", "jumprelu")
    if architecture not in supported:
        raise field_error("architecture", f"{architecture!r} is not supported; sarm reads {', '.join(supported)}")

    input_norm = fields.choice("input_norm", ("standardize", "none"), default="none")  # older sarm exports
    if ours is not None:
        input_norm = ours.choice("input_norm", ("standardize", "none"))
    normalize = cfg.get("normalize_activations", "none")
    if normalize in (None, False, True):  # SAELens < 3 wrote a flag
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize == "layer_norm" and ours is not None and input_norm == "standardize":
        pass  # sarm's standardization, expressed as SAELens's layer_norm with c folded in: divided out below
    elif ours is not None and input_norm == "standardize":
        raise field_error(
            "normalize_activations",
            f"{normalize!r}, but metadata.sarm.input_norm is 'standardize' (written as 'layer_norm'): "
            "the file was edited after sarm wrote it",
        )
    elif normalize == "expected_average_only_in":
        if activation_scale is None:
            raise field_error(
                "normalize_activations",
                "'expected_average_only_in' needs the dataset scaling "
                "constant, which is not stored in the SAE files; pass activation_scale=",
            )
    elif normalize != "none":
        raise field_error(
            "normalize_activations",
            f"{normalize!r} is a per-token runtime normalization sarm does "
            "not reproduce exactly (only 'none' and 'expected_average_only_in' are read)",
        )

    # --- fold everything into the plain form (x - b_dec) @ W_enc + b_enc, f @ W_dec + b_dec
    scale_key = next((key for key in ("finetuning_scaling_factor", "scaling_factor") if key in weights), None)
    if scale_key is not None:
        W_dec = W_dec * _tensor(weights, scale_key, (d_sae,))[:, None]
    if not fields.boolean("apply_b_dec_to_input", True, nullable=True):  # null: false, as sarm always read it
        b_enc = b_enc + b_dec @ W_enc
    if architecture in ("topk", "batchtopk") and fields.boolean("rescale_acts_by_decoder_norm", False, nullable=True):
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    if normalize == "expected_average_only_in":
        W_enc, W_dec, b_dec = W_enc * activation_scale, W_dec / activation_scale, b_dec / activation_scale
    if normalize == "layer_norm":  # SAELens reads x'' = x'/c: W_enc = c·W, W_dec = W/c, b_dec = b/c (saelens_layout)
        c = unbiased_std_factor(d_in)
        W_enc, W_dec, b_dec = W_enc / c, W_dec * c, b_dec * c

    if architecture in ("standard", "relu"):
        sae: SparseAutoencoder = ReLUSAE(d_in, d_sae, input_norm)
    elif architecture == "topk":
        sae = TopKSAE(d_in, d_sae, _saelens_k(fields, d_sae), input_norm)
    elif architecture == "batchtopk":
        sae = BatchTopKSAE(d_in, d_sae, _saelens_k(fields, d_sae), input_norm)
        sae.threshold.fill_(_batchtopk_threshold(fields, weights))
    else:
        thresholds = _jumprelu_thresholds(weights, d_sae)
        budget = _jumprelu_k(fields, ours, d_sae, k)
        widths = _matryoshka_widths(fields)
        if budget is not None and torch.all(thresholds == thresholds[0]):
            if widths is None:
                sae = BatchTopKSAE(d_in, d_sae, budget, input_norm)
            else:
                sae = MatryoshkaBatchTopKSAE(d_in, d_sae, budget, input_norm, widths=widths)
            sae.threshold.fill_(float(thresholds[0]))
        elif ours is not None and ours.data.get("architecture") == "batchtopk":
            raise weights.error("threshold", "differs between latents, but metadata.sarm says a BatchTopK SAE")
        else:
            bandwidth = 0.05 if ours is None else ours.number("bandwidth", positive=True, default=0.05)
            sae = JumpReLUSAE(d_in, d_sae, input_norm, bandwidth=bandwidth)
            with torch.no_grad():  # θ is a trainable parameter
                sae.threshold.copy_(thresholds)

    with torch.no_grad():
        for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            getattr(sae, name).copy_(value)
        if "latent_mask" in weights:
            sae.latent_mask.copy_(weights.get("latent_mask", (d_sae,), kind="mask").bool())
    sae.provenance = _provenance(fields, ours)
    return sae.eval()


def _written_by_sarm(fields: Fields) -> bool:
    """sarm's SAELens 6 layout (``metadata.sarm``) or an older sarm export (top-level ``input_norm``)."""
    return sarm_section(fields) is not None or "input_norm" in fields


def _provenance(fields: Fields, ours: Fields | None) -> dict:
    """``model_name`` / ``hook_layer`` / ``context_size`` in sarm's terms, as far as the file records them."""
    try:
        source = trained_on(fields)
    except SarmInputError:  # a hook outside the residual stream: no layer of sarm's; SARM refuses it on use
        source = {}
    metadata = fields.data.get("metadata")
    context = (
        (ours.data.get("context_size") if ours is not None else None)
        or (metadata.get("context_size") if isinstance(metadata, dict) else None)
        or fields.data.get("context_size")
    )
    provenance = {"model_name": source.get("model"), "hook_layer": source.get("layer"), "context_size": context}
    return {key: value for key, value in provenance.items() if value is not None}


def _saelens_k(fields: Fields, d_sae: int) -> int:
    """k in 1..d_sae; SAELens's BatchTopK allows a float k, accepted when integral."""
    if "k" in fields:
        return fields.integer("k", low=1, high=d_sae, integral_floats=True)
    if fields.data.get("activation_fn_kwargs") is not None:  # absent or null: no kwargs
        kwargs = fields.section("activation_fn_kwargs")
        if "k" in kwargs:
            return kwargs.integer("k", low=1, high=d_sae, integral_floats=True)
    raise fields.error("k", "missing (also no 'activation_fn_kwargs.k')")


def _jumprelu_k(fields: Fields, ours: Fields | None, d_sae: int, k: int | None) -> int | None:
    """The TopK budget a ``jumprelu`` file records, or the caller's ``k=``, or None."""
    if ours is not None and "k" in ours:
        return ours.integer("k", low=1, high=d_sae)
    metadata = fields.data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("training_architecture_details"), dict):
        details = fields.section("metadata").section("training_architecture_details")
        if "k" in details:
            return details.integer("k", low=1, high=d_sae, integral_floats=True)
    if "k" in fields:
        return fields.integer("k", low=1, high=d_sae, integral_floats=True)
    return None if k is None else Fields({"k": k}, fields.path).integer("k", low=1, high=d_sae)


def _matryoshka_widths(fields: Fields) -> list[int] | None:
    """The prefix ends of a Matryoshka BatchTopK file (``metadata.training_architecture_details``), or None."""
    metadata = fields.data.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("training_architecture_details"), dict):
        return None
    details = fields.section("metadata").section("training_architecture_details")
    widths = details.data.get("matryoshka_widths")
    if not widths:
        return None
    if not isinstance(widths, list) or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
        raise details.error("matryoshka_widths", f"expected a list of integers, got {widths!r}")
    try:
        return prefix_widths(fields.integer("d_sae", low=1), widths)
    except ValueError as error:
        raise details.error("matryoshka_widths", str(error)) from None


def _batchtopk_threshold(fields: Fields, weights: Tensors) -> float:
    """A ``batchtopk`` file's one threshold, as sarm's BatchTopK applies it (pre > θ; θ < 0: not estimated)."""
    if "input_norm" in fields:  # an older sarm export: its own threshold, as is
        if "threshold" in weights:  # (negative means "not estimated yet": keep batch top-k at inference)
            return float(weights.get("threshold", (1,) if weights.tensors["threshold"].ndim else ()))
        threshold = fields.number("threshold", default=-1.0, nullable=True)
        return -1.0 if threshold is None else threshold
    if "topk_threshold" not in weights:
        raise weights.error("topk_threshold", "missing (a 'batchtopk' SAE needs it)")
    threshold = weights.get("topk_threshold").double().reshape(-1).clamp_min(0)  # SAELens compares with relu(θ)
    if threshold.numel() != 1:
        raise weights.error("topk_threshold", f"expected one value, got {threshold.numel()}")
    return float(threshold[0])


def _jumprelu_thresholds(weights: Tensors, d_sae: int) -> torch.Tensor:
    """A ``jumprelu`` file's thresholds ``[d_sae]`` (or one shared), clamped at 0 as SAELens's ReLU does."""
    if "threshold" in weights:
        threshold = weights.get("threshold").double().reshape(-1)
    elif "log_threshold" in weights:
        threshold = weights.get("log_threshold").double().exp().reshape(-1)
    else:
        raise weights.error("threshold", "missing (a 'jumprelu' SAE needs it)")
    if threshold.numel() not in (1, d_sae):
        raise weights.error("threshold", f"holds {threshold.numel()} values, expected 1 or d_sae = {d_sae}")
    return threshold.clamp_min(0).expand(d_sae)


# ----------------------------------------------------------------------------- sparsify


def load_sparsify(directory: str | Path) -> TopKSAE:
    """Load one sparsify SAE folder (``cfg.json`` + ``sae.safetensors``); see the module docstring."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG, directory / SPARSIFY_WEIGHTS
    if not cfg_path.is_file() or not weights_path.is_file():
        detect_layout(directory)  # raises with a helpful message (e.g. "pick a hookpoint folder")
    fields = Fields(read_json_object(cfg_path), cfg_path)
    cfg = fields.data
    weights = read_tensors(weights_path)

    for flag, meaning in (
        ("transcode", "a transcoder predicts another module's output"),
        ("skip_connection", "a linear skip connection is not part of sarm's SAE"),
        ("signed", "signed top-k (by |pre|, no ReLU) is not sarm's TopK"),
        ("embed_skip", "an embedding skip connection is not part of sarm's SAE"),
        ("gram_lookup", "an n-gram lookup table is not part of sarm's SAE"),
    ):
        if cfg.get(flag):
            raise SarmInputError(f"{cfg_path}: field '{flag}': true is not supported ({meaning})")
    if cfg.get("activation", "topk") != "topk":
        raise SarmInputError(f"{cfg_path}: field 'activation': {cfg['activation']!r} is not supported (only 'topk')")
    weights.refuse_unknown({"encoder.weight", "encoder.bias", "W_dec", "b_dec"}, "not part of a plain TopK SAE")

    encoder_weight = _tensor(weights, "encoder.weight", (None, None))  # [num_latents, d_in]
    n_latents, d_in = encoder_weight.shape
    if fields.integer("d_in", low=1, default=d_in) != d_in:
        raise fields.error(
            "d_in", f"{cfg['d_in']} but encoder.weight is {list(encoder_weight.shape)} in {weights_path}"
        )
    num_latents = fields.integer("num_latents", low=0, default=0)
    expansion = fields.integer("expansion_factor", low=1, default=None)
    expected = num_latents or (d_in * expansion if expansion is not None else None)
    if expected is not None and expected != n_latents:
        raise fields.error(
            "num_latents" if num_latents else "expansion_factor",
            f"gives {expected} latents but encoder.weight has {n_latents} in {weights_path}",
        )
    sae = TopKSAE(d_in, n_latents, fields.integer("k", low=1, high=n_latents, integral_floats=True), input_norm="none")
    with torch.no_grad():
        sae.W_enc.copy_(encoder_weight.T)
        sae.b_enc.copy_(_tensor(weights, "encoder.bias", (n_latents,)))
        sae.W_dec.copy_(_tensor(weights, "W_dec", (n_latents, d_in)))
        sae.b_dec.copy_(_tensor(weights, "b_dec", (d_in,)))
    return sae.eval()


# ----------------------------------------------------------------------------- helpers


def _tensor(weights: Tensors, key: str, shape: tuple) -> torch.Tensor:
    """A present, finite, floating tensor of ``shape``, in float64 for the folds."""
    return weights.get(key, shape).double()
