"""Reading SAELens and sparsify files: outputs equal the other library's documented formulas.

Each test writes a folder the way the other library does (``cfg.json`` + safetensors written
directly), loads it, and compares with a reference computed here from that library's formulas.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sarm.errors import SarmInputError
from sarm.sae.interop import detect_layout, load_saelens, load_sparsify
from sarm.sae.io import save_sae
from sarm.sae.jumprelu import JumpReLUSAE
from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE

D_IN, D_SAE, K = 10, 40, 4


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=generator) / D_IN**0.5,
        "b_enc": 0.2 * torch.randn(D_SAE, generator=generator),
        "W_dec": torch.randn(D_SAE, D_IN, generator=generator),  # rows deliberately not unit norm
        "b_dec": torch.randn(D_IN, generator=generator),
    }


def inputs(n: int = 64) -> torch.Tensor:
    return 2 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(42))


def write_saelens(directory, weights: dict, **cfg) -> str:
    """An SAE folder as SAELens 6 ``save_model`` writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    full_cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.3.hook_resid_post"},
        **cfg,
    }
    (directory / "cfg.json").write_text(json.dumps(full_cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "sae_weights.safetensors"))
    return str(directory)


def saelens_reference(
    w: dict, x: torch.Tensor, activation, apply_b_dec_to_input: bool = True, rescale_acts_by_decoder_norm: bool = False
):
    """SAELens inference: sae_in = x - b_dec·apply_b_dec_to_input; pre = sae_in @ W_enc + b_enc; ..."""
    pre = (x - w["b_dec"] * apply_b_dec_to_input) @ w["W_enc"] + w["b_enc"]
    norms = w["W_dec"].norm(dim=-1)
    if rescale_acts_by_decoder_norm:
        pre = pre * norms
    f = activation(pre)
    x_hat = (f / norms if rescale_acts_by_decoder_norm else f) @ w["W_dec"] + w["b_dec"]
    return f, x_hat


def topk_then_relu(pre: torch.Tensor, k: int = K) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def assert_matches(sae, reference_latents, reference_x_hat, x):
    out = sae(x)
    assert torch.allclose(out.latents, reference_latents, atol=1e-5)
    assert torch.allclose(out.x_hat, reference_x_hat, atol=1e-4)


# ----------------------------------------------------------------------------- SAELens


def test_standard_relu_sae(tmp_path):
    w = random_weights()
    sae = load_saelens(write_saelens(tmp_path / "sae", w, architecture="standard"))
    assert isinstance(sae, ReLUSAE) and not sae.training and sae.input_norm == "none"
    assert_matches(sae, *saelens_reference(w, inputs(), F.relu), inputs())


def test_apply_b_dec_to_input_false_is_folded_into_b_enc_exactly(tmp_path):
    w = random_weights()
    sae = load_saelens(write_saelens(tmp_path / "sae", w, architecture="standard", apply_b_dec_to_input=False))
    assert torch.allclose(sae.b_enc, w["b_enc"] + w["b_dec"] @ w["W_enc"], atol=1e-6)
    assert_matches(sae, *saelens_reference(w, inputs(), F.relu, apply_b_dec_to_input=False), inputs())
    # and it really differs from the apply_b_dec_to_input = True reading
    assert not torch.allclose(sae(inputs()).latents, saelens_reference(w, inputs(), F.relu)[0], atol=1e-3)


def test_topk_sae(tmp_path):
    w = random_weights()
    sae = load_saelens(write_saelens(tmp_path / "sae", w, architecture="topk", k=K))
    assert isinstance(sae, TopKSAE) and sae.k == K
    assert_matches(sae, *saelens_reference(w, inputs(), topk_then_relu), inputs())


def test_topk_with_rescale_acts_by_decoder_norm_and_no_b_dec_on_input(tmp_path):
    w = random_weights()
    directory = write_saelens(
        tmp_path / "sae", w, architecture="topk", k=K, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=False
    )
    reference = saelens_reference(
        w, inputs(), topk_then_relu, apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=True
    )
    assert_matches(load_saelens(directory), *reference, inputs())


def test_pre_6_topk_written_as_standard_with_activation_fn_kwargs(tmp_path):
    w = random_weights()
    directory = tmp_path / "old"
    write_saelens(
        directory, w, architecture="standard", activation_fn_str="topk", activation_fn_kwargs={"k": K}, metadata={}
    )
    sae = load_saelens(directory)
    assert isinstance(sae, TopKSAE) and sae.k == K
    assert_matches(sae, *saelens_reference(w, inputs(), topk_then_relu), inputs())


def test_pre_6_finetuning_scaling_factor_is_folded_into_the_decoder(tmp_path):
    w = random_weights()
    scale = torch.rand(D_SAE) + 0.5
    write_saelens(
        tmp_path / "sae", {**w, "scaling_factor": scale}, architecture="standard", finetuning_scaling_factor=True
    )
    f, _ = saelens_reference(w, inputs(), F.relu)
    assert_matches(load_saelens(tmp_path / "sae"), f, (f * scale) @ w["W_dec"] + w["b_dec"], inputs())


def test_jumprelu_with_one_shared_threshold_and_a_recorded_k_is_a_batchtopk_sae(tmp_path):
    """SAELens 6 saves a finished BatchTopK run as JumpReLU: f = ReLU(pre) · 1[pre > relu(θ)], θ the same for all,
    with k under metadata.training_architecture_details; no k needs passing by hand."""
    w = random_weights()
    theta = 0.3
    metadata = {"sae_lens_version": "6.5.0", "training_architecture_details": {"k": float(K)}}
    threshold = {"threshold": torch.full((D_SAE,), theta)}
    directory = write_saelens(tmp_path / "sae", {**w, **threshold}, architecture="jumprelu", metadata=metadata)
    sae = load_saelens(directory)
    assert isinstance(sae, BatchTopKSAE) and sae.k == K and not sae.training
    assert float(sae.threshold) == pytest.approx(theta)
    reference = saelens_reference(w, inputs(), lambda pre: F.relu(pre) * (pre > theta))
    assert_matches(sae, *reference, inputs())
    # No k anywhere: the same SAE for inference, as a JumpReLU SAE (k only matters to train it further) ...
    directory = write_saelens(tmp_path / "bare", {**w, **threshold}, architecture="jumprelu")
    assert isinstance(load_saelens(directory), JumpReLUSAE)
    assert_matches(load_saelens(directory), *reference, inputs())
    # ... or a BatchTopK SAE with the k the caller passes.
    assert load_saelens(directory, k=K).k == K


def test_jumprelu_with_per_latent_thresholds(tmp_path):
    """Gemma Scope's kind: one θ per latent, negative ones acting as 0 (SAELens applies ReLU first)."""
    w = random_weights()
    theta = torch.rand(D_SAE, generator=torch.Generator().manual_seed(1)) - 0.2
    directory = write_saelens(tmp_path / "sae", {**w, "threshold": theta}, architecture="jumprelu", k=K)
    sae = load_saelens(directory)
    assert isinstance(sae, JumpReLUSAE)
    assert_matches(sae, *saelens_reference(w, inputs(), lambda pre: F.relu(pre) * (pre > theta)), inputs())
    directory = write_saelens(tmp_path / "bad", {**w, "threshold": theta[:3]}, architecture="jumprelu")
    with pytest.raises(SarmInputError, match=r"field 'threshold': holds 3 values, expected 1 or d_sae = 40"):
        load_saelens(directory)


def test_batchtopk_training_checkpoint(tmp_path):
    w = random_weights()
    directory = write_saelens(
        tmp_path / "sae",
        {**w, "topk_threshold": torch.tensor(0.25, dtype=torch.float64)},
        architecture="batchtopk",
        k=float(K),
        rescale_acts_by_decoder_norm=True,
    )
    sae = load_saelens(directory)
    assert isinstance(sae, BatchTopKSAE) and sae.k == K
    reference = saelens_reference(
        w, inputs(), lambda pre: F.relu(pre) * (pre > 0.25), rescale_acts_by_decoder_norm=True
    )
    assert_matches(sae, *reference, inputs())


def test_expected_average_only_in_needs_the_scale_and_then_reads_raw_activations(tmp_path):
    w = random_weights()
    directory = write_saelens(
        tmp_path / "sae", w, architecture="standard", normalize_activations="expected_average_only_in"
    )
    with pytest.raises(SarmInputError, match=r"cfg\.json: field 'normalize_activations'.*activation_scale"):
        load_saelens(directory)
    c = 3.0  # the SAE reads c·x and reconstructs c·x; the loaded one reads x and reconstructs x
    f, x_hat_scaled = saelens_reference(w, c * inputs(), F.relu)
    assert_matches(load_saelens(directory, activation_scale=c), f, x_hat_scaled / c, inputs())


@pytest.mark.parametrize("normalize", ["layer_norm", "constant_norm_rescale"])
def test_runtime_normalizations_are_refused(tmp_path, normalize):
    directory = write_saelens(
        tmp_path / "sae", random_weights(), architecture="standard", normalize_activations=normalize
    )
    with pytest.raises(SarmInputError, match=rf"cfg\.json: field 'normalize_activations': '{normalize}'"):
        load_saelens(directory)


def test_unknown_architecture_names_cfg_json_and_the_field(tmp_path):
    directory = write_saelens(tmp_path / "sae", random_weights(), architecture="gated")
    with pytest.raises(SarmInputError, match=r"sae/cfg\.json: field 'architecture': 'gated' is not supported"):
        load_saelens(directory)


def test_wrong_shape_and_unknown_tensor_name_the_weights_file(tmp_path):
    w = random_weights()
    directory = write_saelens(tmp_path / "a", {**w, "W_enc": w["W_enc"].T}, architecture="standard")
    with pytest.raises(
        SarmInputError, match=r"sae_weights\.safetensors: field 'W_enc': shape \[40, 10\], expected \[10, 40\]"
    ):
        load_saelens(directory)
    directory = write_saelens(tmp_path / "b", {**w, "b_gate": torch.zeros(D_SAE)}, architecture="standard")
    with pytest.raises(SarmInputError, match=r"sae_weights\.safetensors: field 'b_gate'"):
        load_saelens(directory)


def test_non_finite_weights_and_mistyped_fields_are_named(tmp_path):
    w = random_weights()
    w["W_dec"][3, :2] = torch.tensor([float("nan"), float("inf")])
    directory = write_saelens(tmp_path / "nan", w, architecture="standard")
    with pytest.raises(SarmInputError, match=r"sae_weights\.safetensors: field 'W_dec': holds 2 non-finite values"):
        load_saelens(directory)
    directory = write_saelens(tmp_path / "str", random_weights(), architecture="topk", k="4")
    with pytest.raises(SarmInputError, match=r"cfg\.json: field 'k': expected an integer in 1\.\.40, got '4'"):
        load_saelens(directory)
    write_sparsify(tmp_path / "sparsify", expansion_factor="4")
    with pytest.raises(SarmInputError, match=r"cfg\.json: field 'expansion_factor': expected a positive integer"):
        load_sparsify(tmp_path / "sparsify")


def test_missing_field_is_named(tmp_path):
    directory = write_saelens(tmp_path / "sae", random_weights(), architecture="topk")
    with pytest.raises(SarmInputError, match=r"cfg\.json: field 'k': missing"):
        load_saelens(directory)


def test_bfloat16_weights_load_as_float32(tmp_path):
    w = {k: v.bfloat16() for k, v in random_weights().items()}
    sae = load_saelens(write_saelens(tmp_path / "sae", w, architecture="standard", dtype="bfloat16"))
    assert sae.W_enc.dtype == torch.float32
    assert_matches(sae, *saelens_reference({k: v.float() for k, v in w.items()}, inputs(), F.relu), inputs())


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu"])
def test_sarm_save_then_load_saelens_round_trips(tmp_path, kind):
    torch.manual_seed(0)
    sae = {
        "topk": lambda: TopKSAE(D_IN, D_SAE, K, input_norm="standardize"),
        "batchtopk": lambda: BatchTopKSAE(D_IN, D_SAE, K, input_norm="standardize"),
        "relu": lambda: ReLUSAE(D_IN, D_SAE, input_norm="standardize"),
    }[kind]()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_()
        if kind == "batchtopk":
            sae.threshold.fill_(0.2)
    sae.eval()
    save_sae(sae, tmp_path / "sarm")
    assert detect_layout(tmp_path / "sarm") == "sarm"
    loaded = load_saelens(tmp_path / "sarm")
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    assert loaded.latent_mask.all()  # a training-time mask is not part of the saved SAE
    out, expected = loaded(inputs()), sae(inputs())
    assert torch.equal(out.latents, expected.latents) and torch.equal(out.x_hat, expected.x_hat)


# ----------------------------------------------------------------------------- sparsify


def write_sparsify(directory, seed: int = 0, **cfg) -> dict[str, torch.Tensor]:
    """A hookpoint folder as sparsify's ``SparseCoder.save_to_disk`` writes it."""
    generator = torch.Generator().manual_seed(seed)
    weights = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=generator) / D_IN**0.5,
        "encoder.bias": 0.2 * torch.randn(D_SAE, generator=generator),
        "W_dec": torch.randn(D_SAE, D_IN, generator=generator),
        "b_dec": torch.randn(D_IN, generator=generator),
    }
    directory.mkdir(parents=True, exist_ok=True)
    full_cfg = {
        "activation": "topk",
        "expansion_factor": D_SAE // D_IN,
        "normalize_decoder": True,
        "num_latents": 0,
        "k": K,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
        **cfg,
    }
    (directory / "cfg.json").write_text(json.dumps(full_cfg))
    save_file(weights, str(directory / "sae.safetensors"))
    return weights


def sparsify_reference(w: dict, x: torch.Tensor):
    """sparsify: pre = ReLU((x - b_dec) @ encoder.weightᵀ + encoder.bias); top-k; x̂ = f @ W_dec + b_dec."""
    pre = F.relu(F.linear(x - w["b_dec"], w["encoder.weight"], w["encoder.bias"]))
    values, indices = pre.topk(K, dim=-1, sorted=False)
    f = torch.zeros_like(pre).scatter(-1, indices, values)
    return f, f @ w["W_dec"] + w["b_dec"]


def test_sparsify_topk_sae(tmp_path):
    w = write_sparsify(tmp_path / "layers.6")
    assert detect_layout(tmp_path / "layers.6") == "sparsify"
    sae = load_sparsify(tmp_path / "layers.6")
    assert isinstance(sae, TopKSAE) and sae.k == K and sae.n_latents == D_SAE and sae.input_norm == "none"
    assert_matches(sae, *sparsify_reference(w, inputs()), inputs())


def test_sparsify_num_latents_and_missing_d_in(tmp_path):
    """num_latents wins over expansion_factor; d_in, when absent, comes from the weights."""
    directory = tmp_path / "layers.2"
    w = write_sparsify(directory, num_latents=D_SAE, expansion_factor=1)
    cfg = json.loads((directory / "cfg.json").read_text())
    del cfg["d_in"]
    (directory / "cfg.json").write_text(json.dumps(cfg))
    assert_matches(load_sparsify(directory), *sparsify_reference(w, inputs()), inputs())


def test_sparsify_checkpoint_root_asks_for_a_hookpoint(tmp_path):
    write_sparsify(tmp_path / "run" / "layers.4")
    write_sparsify(tmp_path / "run" / "layers.8")
    with pytest.raises(SarmInputError, match="layers.4, layers.8"):
        load_sparsify(tmp_path / "run")


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"transcode": True}, "transcode"),
        ({"signed": True}, "signed"),
        ({"activation": "groupmax"}, "activation"),
        ({"expansion_factor": 8}, "expansion_factor"),
    ],
)
def test_sparsify_unsupported_settings_are_named(tmp_path, cfg, field):
    write_sparsify(tmp_path / "sae", **cfg)
    with pytest.raises(SarmInputError, match=rf"cfg\.json: field '{field}'"):
        load_sparsify(tmp_path / "sae")


def test_detect_layout(tmp_path):
    write_saelens(tmp_path / "lens", random_weights(), architecture="standard")
    assert detect_layout(tmp_path / "lens") == "saelens"
    with pytest.raises(SarmInputError, match="no SAE here"):
        detect_layout(tmp_path / "empty")
