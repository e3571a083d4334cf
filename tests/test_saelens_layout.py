"""sarm's SAE files in the SAELens 6 layout: what SAELens reads from them equals what sarm computes.

SAELens's inference is written out here (``saelens_forward``, from ``sae_lens/saes/sae.py`` 6.54:
``process_sae_in``, the ``layer_norm`` normalization, the standard / topk / jumprelu encoders), so these tests
run without SAELens; ``tests/peers`` checks the same files against the real SAELens (``make test-peers``).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.reward import SARM
from sarm.reward.export import save_reward_model
from sarm.reward.network import SARMNetwork
from sarm.sae import BatchTopKSAE, JumpReLUSAE, MatryoshkaBatchTopKSAE, ReLUSAE, TopKSAE, load_sae, save_sae
from sarm.sae.base import EPS
from sarm.sae.saelens_layout import LAYER_NORM_RELATIVE_GAP, layer_of_hook

D_IN, D_SAE, K = 24, 96, 6
PROVENANCE = {"model_name": "embedded:SmolLM2-135M-Instruct", "hook_layer": 15, "context_size": 256}


def trained_like(sae, seed: int = 0):
    """Non-trivial biases and decoder norms (as after folding whitening), a BatchTopK threshold."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(sae.n_latents, generator=generator))
        sae.b_dec.copy_(0.5 * torch.randn(sae.d_in, generator=generator))
        sae.W_dec.mul_(0.5 + torch.rand(sae.n_latents, 1, generator=generator))
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(0.4)
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(0.6 * torch.rand(sae.n_latents, generator=generator))
    return sae.eval()


def residual_like(n: int = 256, seed: int = 1) -> torch.Tensor:
    """Hidden states at a residual stream's scale: per-token std 4–8, an offset per token (SmolLM2-135M's
    layer 15 has σ ≥ 4.4 on every token)."""
    generator = torch.Generator().manual_seed(seed)
    scale = 4 + 4 * torch.rand(n, 1, generator=generator)
    return scale * torch.randn(n, D_IN, generator=generator) + torch.randn(n, 1, generator=generator)


def saelens_forward(directory, x: torch.Tensor, latents: torch.Tensor | None = None):
    """(latents, reconstruction) as SAELens 6 computes them from cfg.json + sae_weights.safetensors, in float32.
    ``latents``: decode these instead of the encoded ones (SAELens's layer_norm still takes μ, s from x)."""
    cfg = json.loads((directory / "cfg.json").read_text())
    w = {k: v.float() for k, v in load_file(directory / "sae_weights.safetensors").items()}  # cast to cfg dtype
    assert cfg["dtype"] == "float32" and cfg["apply_b_dec_to_input"] is True
    x_in = x
    if cfg["normalize_activations"] == "layer_norm":  # run_time_activation_ln_in / _out
        mu = x.mean(-1, keepdim=True)
        s = (x - mu).std(-1, keepdim=True)
        x_in = (x - mu) / (s + 1e-5)
    else:
        assert cfg["normalize_activations"] == "none"
    pre = (x_in - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        f = F.relu(pre)
    elif cfg["architecture"] == "topk":
        assert cfg["rescale_acts_by_decoder_norm"] is False
        values, indices = pre.topk(cfg["k"], dim=-1, sorted=False)
        f = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    else:
        assert cfg["architecture"] == "jumprelu"
        f = F.relu(pre) * (pre > w["threshold"])
    out = (f if latents is None else latents) @ w["W_dec"] + w["b_dec"]
    if cfg["normalize_activations"] == "layer_norm":
        out = out * s + mu
    return f, out


def sarm_raw_reconstruction(sae, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """sarm's reconstruction mapped back to the hidden states' own space (its decoder works in the
    standardized one): x̂'·σ + μ, σ the population std."""
    x_hat = sae.decode(latents)
    if sae.input_norm == "standardize":
        x = x.float()
        x_hat = x_hat * x.std(-1, keepdim=True, unbiased=False) + x.mean(-1, keepdim=True)
    return x_hat


SAES = {
    "topk": lambda norm: TopKSAE(D_IN, D_SAE, K, norm),
    "batchtopk": lambda norm: BatchTopKSAE(D_IN, D_SAE, K, norm),
    "matryoshka_batchtopk": lambda norm: MatryoshkaBatchTopKSAE(D_IN, D_SAE, K, norm, widths=[8, 32, D_SAE]),
    "relu": lambda norm: ReLUSAE(D_IN, D_SAE, norm),
    "jumprelu": lambda norm: JumpReLUSAE(D_IN, D_SAE, norm),
}


@pytest.mark.parametrize("input_norm", ["standardize", "none"])
@pytest.mark.parametrize("kind", list(SAES))
def test_saelens_formulas_on_the_written_files_give_sarms_latents_and_reconstructions(tmp_path, kind, input_norm):
    torch.manual_seed(0)
    sae = trained_like(SAES[kind](input_norm))
    save_sae(sae, tmp_path, extra=PROVENANCE)
    x = residual_like()
    latents = sae.encode(x)
    f, _ = saelens_forward(tmp_path, x)
    assert (latents > 0).sum() > 0 and torch.equal(f > 0, latents > 0)  # every token keeps its active set
    assert (f - latents).abs().max() <= 1e-5
    _, decoded = saelens_forward(tmp_path, x, latents)
    assert (decoded - sarm_raw_reconstruction(sae, x, latents)).abs().max() <= 1e-5 * x.abs().max()


@pytest.mark.parametrize("kind", list(SAES))
def test_sarm_reads_its_files_back_bit_for_bit(tmp_path, kind):
    """The folded standardization is divided back out exactly: same weights, same latents (explanations
    are keyed by the SAE's bytes, sarm.explain.store)."""
    sae = trained_like(SAES[kind]("standardize"))
    save_sae(sae, tmp_path, extra=PROVENANCE)
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.provenance == PROVENANCE


def test_cfg_names_the_saelens_architecture_and_where_the_activations_came_from(tmp_path):
    save_sae(trained_like(BatchTopKSAE(D_IN, D_SAE, K)), tmp_path, extra=PROVENANCE)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    weights = load_file(tmp_path / "sae_weights.safetensors")
    assert cfg["architecture"] == "jumprelu" and weights["threshold"].shape == (D_SAE,)
    assert cfg["dtype"] == "float32" and cfg["normalize_activations"] == "layer_norm"
    metadata = cfg["metadata"]
    assert metadata["sae_lens_version"] >= "6" and metadata["model_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # layer 15 = the residual stream after 15 decoder layers = the output of block 14 (counted from 0)
    assert metadata["hook_name"] == "blocks.14.hook_resid_post" and metadata["hf_hook_name"] == "model.layers.14"
    assert metadata["context_size"] == 256 and "hook_layer" not in cfg
    assert metadata["training_architecture_details"] == {"k": K}  # where SAELens's BatchTopK runs keep k
    assert metadata["sarm"]["backbone"] == "embedded:SmolLM2-135M-Instruct" and metadata["sarm"]["layer"] == 15
    assert metadata["sarm"]["architecture"] == "batchtopk" and metadata["sarm"]["input_norm"] == "standardize"
    assert layer_of_hook(metadata["hook_name"]) == layer_of_hook(metadata["hf_hook_name"]) == 15


def test_the_layer_norm_eps_gap_is_within_its_stated_bound():
    """SAELens's standardization (unbiased std, eps 1e-5) times c against sarm's (population std, eps 1e-6):
    relative gap < 9e-6 / σ per token, which is why small-σ tokens are the only ones it could show on."""
    x = residual_like(512) * torch.logspace(-3, 2, 512)[:, None]
    sigma = x.double().std(-1, unbiased=False, keepdim=True)
    mu = x.double().mean(-1, keepdim=True)
    ours = (x.double() - mu) / (sigma + EPS)  # sarm.sae.base.standardize in float64: the gap, not float32 rounding
    c = (D_IN / (D_IN - 1)) ** 0.5
    theirs = c * (x.double() - mu) / (x.double().std(-1, keepdim=True) + 1e-5)
    gap = (theirs - ours).norm(dim=-1, keepdim=True) / ours.norm(dim=-1, keepdim=True)  # one ratio per token
    assert torch.all(gap <= LAYER_NORM_RELATIVE_GAP / sigma)
    assert gap[sigma >= 4].max() < 2.5e-6  # at a residual stream's scale: float32 rounding


def test_untrained_batchtopk_has_no_inference_rule_to_save(tmp_path):
    with pytest.raises(ValueError, match="without an inference threshold"):
        save_sae(BatchTopKSAE(D_IN, D_SAE, K), tmp_path)


def test_older_exports_without_metadata_still_load(tmp_path):
    """sarm's previous layout: its own architecture names and input_norm at the top level, no fold."""
    sae = trained_like(BatchTopKSAE(D_IN, D_SAE, K))
    save_sae(sae, tmp_path / "new")
    weights = {k: getattr(sae, k).detach().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    from safetensors.torch import save_file

    (tmp_path / "old").mkdir()
    save_file(weights, str(tmp_path / "old" / "sae_weights.safetensors"))
    cfg = {**sae.config(), "model_name": "m", "hook_layer": 2}
    (tmp_path / "old" / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae(tmp_path / "old")
    assert loaded.config() == sae.config() and loaded.provenance == {"model_name": "m", "hook_layer": 2}
    x = residual_like()
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_the_sae_inside_an_exported_sarm_keeps_its_provenance(tmp_path):
    network = SARMNetwork(trained_like(TopKSAE(D_IN, D_SAE, K)), "last")
    save_reward_model(tmp_path, network, {"model": "embedded:SmolLM2-135M-Instruct", "layer": 15, "max_length": 256})
    metadata = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]
    assert metadata["hook_name"] == "blocks.14.hook_resid_post" and metadata["context_size"] == 256
    assert metadata["sarm"]["backbone"] == "embedded:SmolLM2-135M-Instruct"


def saelens_sae_dir(tmp_path, hook_name: str, model_name: str = "gpt2") -> str:
    """A SAELens 6 file: provenance nested under metadata, as SAELens writes it."""
    save_sae(TopKSAE(D_IN, D_SAE, K, "none"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["metadata"] = {"sae_lens_version": "6.54.12", "model_name": model_name, "hook_name": hook_name}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def test_a_saelens_sae_is_held_to_its_model_and_layer(tmp_path):
    model = SARM(sae=saelens_sae_dir(tmp_path / "a", "blocks.5.hook_resid_post"))
    model.check_backbone({"model": "gpt2", "layer": 6})  # resid_post of block 5 = after 6 layers
    with pytest.raises(SarmInputError, match="trained on layer 6 of gpt2, the data comes from layer 3"):
        model.check_backbone({"model": "gpt2", "layer": 3})
    with pytest.raises(SarmInputError, match="the SAE was trained on 'gpt2', the data comes from 'other/model'"):
        model.check_backbone({"model": "other/model", "layer": 6})
    # The embedded GGUF is the hub model it quantizes.
    smol = SARM(sae=saelens_sae_dir(tmp_path / "b", "blocks.14.hook_resid_post", "HuggingFaceTB/SmolLM2-135M-Instruct"))
    smol.check_backbone({"model": "embedded:SmolLM2-135M-Instruct", "layer": 15})
    with pytest.raises(SarmInputError, match="'blocks.3.hook_mlp_out', which is not the residual stream"):
        SARM(sae=saelens_sae_dir(tmp_path / "c", "blocks.3.hook_mlp_out"))
