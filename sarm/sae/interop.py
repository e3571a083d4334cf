"""Read SAEs saved by other libraries: SAELens and EleutherAI's sparsify.

Every loader returns a sarm ``SparseAutoencoder`` (in eval mode) whose outputs equal the other
library's inference formulas exactly; anything that cannot be represented exactly is refused with a
``SarmInputError`` naming the file and the field. All folds are computed in float64, weights end in
float32.

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
      "jumprelu"   f = ReLU(pre) · 1[pre > relu(θ)]: exactly sarm's BatchTopK inference rule
                   f = pre · 1[pre > θ] *when θ is the same for every latent* (SAELens saves its
                   BatchTopK SAEs this way). k is not stored in such a file; pass ``k=`` (it only
                   matters if the SAE is trained further). Per-latent thresholds (e.g. Gemma Scope)
                   have no sarm equivalent and are refused.
      "relu" / "topk" / "batchtopk" written by sarm itself (cfg has ``input_norm``) load too.

    Folded on load, each exactly, in this order:
      scaling_factor (SAELens < 6 finetuning scale s_i, decode (f·s) @ W_dec)   W_dec ← s_i · W_dec
      apply_b_dec_to_input = false      b_enc ← b_enc + b_dec @ W_enc
      rescale_acts_by_decoder_norm      (TopK/BatchTopK: pre ← pre·n_i, decode with f/n_i, n_i = ‖W_dec,i‖)
                                        W_enc ← W_enc·n_i, b_enc ← b_enc·n_i, W_dec ← W_dec/n_i
      normalize_activations = "expected_average_only_in": the SAE expects inputs multiplied by a
        dataset constant c that is *not* in the files; pass ``activation_scale=c`` to fold it
        (W_enc ← c·W_enc, W_dec ← W_dec/c, b_dec ← b_dec/c, as SAELens's own fold), else refused.
      normalize_activations = "layer_norm" / "constant_norm_rescale": per-token runtime maps that
        differ from sarm's ``standardize`` (eps, unbiased std); refused.
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

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.sae.base import SparseAutoencoder
from sarm.sae.relu import ReLUSAE
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
    SAELens layout, whether ``cfg.json`` carries sarm's ``input_norm`` field)."""
    directory = Path(directory)
    cfg_path = directory / CFG
    if cfg_path.is_file() and (directory / SAELENS_WEIGHTS).is_file():
        return "sarm" if "input_norm" in _read_cfg(cfg_path) else "saelens"
    if cfg_path.is_file() and (directory / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    hookpoints = sorted(p.parent.name for p in directory.glob(f"*/{SPARSIFY_WEIGHTS}")) if directory.is_dir() else []
    if hookpoints:
        raise SarmInputError(f"{directory}: a sparsify checkpoint with one SAE per hookpoint; "
                             f"pass one of its folders: {', '.join(hookpoints)}")
    raise SarmInputError(f"{directory}: no SAE here (expected {CFG} with {SAELENS_WEIGHTS} (sarm/SAELens) "
                         f"or {SPARSIFY_WEIGHTS} (sparsify))")


# ----------------------------------------------------------------------------- SAELens


def load_saelens(directory: str | Path, *, k: int | None = None,
                 activation_scale: float | None = None) -> SparseAutoencoder:
    """Load a SAELens-layout SAE; see the module docstring for what is mapped and folded.

    Args:
        directory: folder with ``cfg.json`` and ``sae_weights.safetensors``.
        k: TopK budget for a ``jumprelu`` file (not stored there); ignored when the file has one.
        activation_scale: the dataset constant of ``normalize_activations = "expected_average_only_in"``.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG, directory / SAELENS_WEIGHTS
    cfg = _read_cfg(cfg_path)
    weights = _read_weights(weights_path)

    def field_error(name: str, reason: str) -> SarmInputError:
        return SarmInputError(f"{cfg_path}: field '{name}': {reason}")

    d_in, d_sae = _positive_int(cfg, "d_in", cfg_path), _positive_int(cfg, "d_sae", cfg_path)
    unknown = sorted(set(weights) - {"W_enc", "b_enc", "W_dec", "b_dec"} - set(_SAELENS_EXTRA_KEYS))
    if unknown:
        raise SarmInputError(f"{weights_path}: tensor '{unknown[0]}': not part of any SAE architecture sarm reads")
    W_enc = _tensor(weights, "W_enc", (d_in, d_sae), weights_path)
    b_enc = _tensor(weights, "b_enc", (d_sae,), weights_path)
    W_dec = _tensor(weights, "W_dec", (d_sae, d_in), weights_path)
    b_dec = _tensor(weights, "b_dec", (d_in,), weights_path)

    architecture = cfg.get("architecture", "standard")
    activation_fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if architecture in ("standard", "relu") and activation_fn == "topk":
        architecture = "topk"  # SAELens < 6 wrote TopK SAEs as "standard" + activation_fn_str "topk"
    elif architecture == "standard" and activation_fn != "relu":
        raise field_error("activation_fn_str", f"{activation_fn!r} is not supported (only 'relu' and 'topk')")
    supported = ("standard", "relu", "topk", "batchtopk", "jumprelu")
    if architecture not in supported:
        raise field_error("architecture", f"{architecture!r} is not supported; sarm reads {', '.join(supported)}")

    input_norm = cfg.get("input_norm", "none")
    if input_norm not in ("none", "standardize"):
        raise field_error("input_norm", f"{input_norm!r}: expected 'standardize' or 'none'")
    normalize = cfg.get("normalize_activations", "none")
    normalize = {None: "none", False: "none", True: "expected_average_only_in"}.get(normalize, normalize)
    if normalize == "expected_average_only_in":
        if activation_scale is None:
            raise field_error("normalize_activations", "'expected_average_only_in' needs the dataset scaling "
                              "constant, which is not stored in the SAE files; pass activation_scale=")
    elif normalize != "none":
        raise field_error("normalize_activations", f"{normalize!r} is a per-token runtime normalization sarm does "
                          "not reproduce exactly (only 'none' and 'expected_average_only_in' are read)")

    # --- fold everything into the plain form (x - b_dec) @ W_enc + b_enc, f @ W_dec + b_dec
    scale_key = next((key for key in ("finetuning_scaling_factor", "scaling_factor") if key in weights), None)
    if scale_key is not None:
        W_dec = W_dec * _tensor(weights, scale_key, (d_sae,), weights_path)[:, None]
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc
    if architecture in ("topk", "batchtopk") and cfg.get("rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    if normalize == "expected_average_only_in":
        W_enc, W_dec, b_dec = W_enc * activation_scale, W_dec / activation_scale, b_dec / activation_scale

    if architecture in ("standard", "relu"):
        sae: SparseAutoencoder = ReLUSAE(d_in, d_sae, input_norm)
    elif architecture == "topk":
        sae = TopKSAE(d_in, d_sae, _saelens_k(cfg, cfg_path, d_sae), input_norm)
    else:
        if architecture == "batchtopk":
            budget = _saelens_k(cfg, cfg_path, d_sae)
        else:
            budget = cfg.get("k", k)
            if budget is None:
                raise field_error("k", "missing: a 'jumprelu' file does not store the TopK budget that sarm's "
                                  "BatchTopK SAE needs for training; pass k=")
            budget = _as_int(budget, "k", cfg_path, d_sae)
        sae = BatchTopKSAE(d_in, d_sae, budget, input_norm)
        sae.threshold.fill_(_uniform_threshold(cfg, weights, weights_path, architecture))

    with torch.no_grad():
        for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            getattr(sae, name).copy_(value)
        if "latent_mask" in weights:
            sae.latent_mask.copy_(_tensor(weights, "latent_mask", (d_sae,), weights_path).bool())
    return sae.eval()


def _saelens_k(cfg: dict, cfg_path: Path, d_sae: int) -> int:
    if "k" in cfg:
        return _as_int(cfg["k"], "k", cfg_path, d_sae)
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if "k" in kwargs:
        return _as_int(kwargs["k"], "activation_fn_kwargs.k", cfg_path, d_sae)
    raise SarmInputError(f"{cfg_path}: field 'k': missing (also no 'activation_fn_kwargs.k')")


def _uniform_threshold(cfg: dict, weights: dict, weights_path: Path, architecture: str) -> float:
    """The one threshold every latent shares, as sarm's BatchTopK applies it (pre > θ, θ ≥ 0)."""
    if architecture == "batchtopk" and "input_norm" in cfg:  # written by sarm: its own threshold, as is
        if "threshold" in weights:  # (negative means "not estimated yet": keep batch top-k at inference)
            return float(weights["threshold"])
        return float(cfg.get("threshold", -1.0))
    if architecture == "batchtopk":
        if "topk_threshold" not in weights:
            raise SarmInputError(f"{weights_path}: tensor 'topk_threshold': missing (a 'batchtopk' SAE needs it)")
        key, threshold = "topk_threshold", weights["topk_threshold"].double().reshape(-1)
    elif "threshold" in weights:
        key, threshold = "threshold", weights["threshold"].double().reshape(-1)
    elif "log_threshold" in weights:
        key, threshold = "log_threshold", weights["log_threshold"].double().exp().reshape(-1)
    else:
        raise SarmInputError(f"{weights_path}: tensor 'threshold': missing (a 'jumprelu' SAE needs it)")
    threshold = threshold.clamp_min(0)  # SAELens compares with relu(θ)
    if threshold.numel() == 0 or not torch.all(threshold == threshold[0]):
        raise SarmInputError(f"{weights_path}: tensor '{key}': per-latent JumpReLU thresholds have no sarm "
                             "equivalent (sarm's BatchTopK uses one threshold for all latents)")
    return float(threshold[0])


# ----------------------------------------------------------------------------- sparsify


def load_sparsify(directory: str | Path) -> TopKSAE:
    """Load one sparsify SAE folder (``cfg.json`` + ``sae.safetensors``); see the module docstring."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG, directory / SPARSIFY_WEIGHTS
    if not cfg_path.is_file() or not weights_path.is_file():
        detect_layout(directory)  # raises with a helpful message (e.g. "pick a hookpoint folder")
    cfg = _read_cfg(cfg_path)
    weights = _read_weights(weights_path)

    for flag, meaning in (("transcode", "a transcoder predicts another module's output"),
                          ("skip_connection", "a linear skip connection is not part of sarm's SAE"),
                          ("signed", "signed top-k (by |pre|, no ReLU) is not sarm's TopK"),
                          ("embed_skip", "an embedding skip connection is not part of sarm's SAE"),
                          ("gram_lookup", "an n-gram lookup table is not part of sarm's SAE")):
        if cfg.get(flag):
            raise SarmInputError(f"{cfg_path}: field '{flag}': true is not supported ({meaning})")
    if cfg.get("activation", "topk") != "topk":
        raise SarmInputError(f"{cfg_path}: field 'activation': {cfg['activation']!r} is not supported (only 'topk')")
    unknown = sorted(set(weights) - {"encoder.weight", "encoder.bias", "W_dec", "b_dec"})
    if unknown:
        raise SarmInputError(f"{weights_path}: tensor '{unknown[0]}': not part of a plain TopK SAE")

    encoder_weight = _tensor(weights, "encoder.weight", None, weights_path)
    if encoder_weight.ndim != 2:
        raise SarmInputError(f"{weights_path}: tensor 'encoder.weight': shape {tuple(encoder_weight.shape)}, "
                             "expected [num_latents, d_in]")
    n_latents, d_in = encoder_weight.shape
    if "d_in" in cfg and cfg["d_in"] != d_in:
        raise SarmInputError(f"{cfg_path}: field 'd_in': {cfg['d_in']} but encoder.weight is "
                             f"{tuple(encoder_weight.shape)} in {weights_path}")
    expected = cfg.get("num_latents") or (d_in * cfg["expansion_factor"] if "expansion_factor" in cfg else None)
    if expected is not None and expected != n_latents:
        field = "num_latents" if cfg.get("num_latents") else "expansion_factor"
        raise SarmInputError(f"{cfg_path}: field '{field}': gives {expected} latents but encoder.weight has "
                             f"{n_latents} in {weights_path}")
    if "k" not in cfg:
        raise SarmInputError(f"{cfg_path}: field 'k': missing")
    sae = TopKSAE(d_in, n_latents, _as_int(cfg["k"], "k", cfg_path, n_latents), input_norm="none")
    with torch.no_grad():
        sae.W_enc.copy_(encoder_weight.T)
        sae.b_enc.copy_(_tensor(weights, "encoder.bias", (n_latents,), weights_path))
        sae.W_dec.copy_(_tensor(weights, "W_dec", (n_latents, d_in), weights_path))
        sae.b_dec.copy_(_tensor(weights, "b_dec", (d_in,), weights_path))
    return sae.eval()


# ----------------------------------------------------------------------------- helpers


def _read_cfg(path: Path) -> dict:
    if not path.is_file():
        raise SarmInputError(f"{path}: missing")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SarmInputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise SarmInputError(f"{path}: expected a JSON object")
    return cfg


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SarmInputError(f"{path}: missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise SarmInputError(f"{path}: not a readable safetensors file ({e})") from None


def _tensor(weights: dict, key: str, shape: tuple | None, path: Path) -> torch.Tensor:
    if key not in weights:
        raise SarmInputError(f"{path}: tensor '{key}': missing")
    tensor = weights[key]
    if shape is not None and tuple(tensor.shape) != shape:
        raise SarmInputError(f"{path}: tensor '{key}': shape {tuple(tensor.shape)}, expected {shape}")
    return tensor if tensor.dtype == torch.bool else tensor.double()


def _positive_int(cfg: dict, field: str, path: Path) -> int:
    if field not in cfg:
        raise SarmInputError(f"{path}: field '{field}': missing")
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SarmInputError(f"{path}: field '{field}': {value!r} is not a positive integer")
    return value


def _as_int(value, field: str, path: Path, n_latents: int) -> int:
    """k as an int in 1..n_latents; SAELens's BatchTopK allows a float k, accepted when integral."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise SarmInputError(f"{path}: field '{field}': {value!r} is not an integer")
    if not 0 < int(value) <= n_latents:
        raise SarmInputError(f"{path}: field '{field}': {value} is not in 1..{n_latents}")
    return int(value)
