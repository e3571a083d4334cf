"""TopK SAE: sparsity, exact sparse decoding, decoder geometry, persistence."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sarm.errors import SarmInputError
from sarm.sae import BatchTopKSAE, ReLUSAE, TopKSAE, load_sae, save_sae, standardize
from sarm.sae.losses import auxk_loss
from sarm.sae.module import geometric_median


@pytest.fixture
def sae():
    torch.manual_seed(0)
    model = TopKSAE(d_in=16, n_latents=64, k=4)
    with torch.no_grad():
        model.b_enc.normal_()  # non-trivial biases so tests see them
        model.b_dec.normal_()
    return model


def test_standardize_is_per_token_and_affine_invariant():
    x = torch.randn(5, 32) * 7 + 3
    z = standardize(x)
    torch.testing.assert_close(z.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardize(2.5 * x - 11), z, atol=1e-4, rtol=1e-4)


def test_encode_keeps_exactly_the_top_k_pre_activations(sae):
    x = torch.randn(8, 16)
    z = sae.encode(x)
    pre = sae.pre_activations(sae.preprocess(x))
    assert ((z != 0).sum(-1) <= sae.k).all()
    for row in range(8):
        top = pre[row].topk(sae.k).indices
        expected = torch.zeros(64)
        expected[top] = pre[row, top].clamp_min(0)
        torch.testing.assert_close(z[row], expected)


def test_forward_reconstructs_from_the_latents(sae):
    x = torch.randn(3, 7, 16)  # any leading shape
    out = sae(x)
    torch.testing.assert_close(out.latents, sae.encode(x))
    torch.testing.assert_close(out.x_hat, out.latents @ sae.W_dec + sae.b_dec)
    torch.testing.assert_close(out.x, standardize(x))


def test_batchtopk_spends_k_per_token_on_average_and_uses_its_threshold_at_inference():
    torch.manual_seed(0)
    sae = BatchTopKSAE(16, 64, k=4).train()
    x = torch.randn(32, 16)
    latents = sae.encode(x)
    assert (latents > 0).sum() <= 4 * 32
    assert (latents > 0).sum(-1).float().std() > 0  # unequal per token: the budget is the batch's
    threshold = float(sae.threshold)
    assert threshold > 0
    sae.eval()
    pre = sae.pre_activations(sae.preprocess(x))
    torch.testing.assert_close(sae.encode(x), torch.where(pre > threshold, pre, torch.zeros_like(pre)))


def test_relu_sae_keeps_every_positive_pre_activation():
    sae = ReLUSAE(16, 64)
    x = torch.randn(5, 16)
    torch.testing.assert_close(sae.encode(x), sae.pre_activations(sae.preprocess(x)).clamp_min(0))


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE, ReLUSAE])
def test_a_masked_latent_contributes_nothing(cls):
    torch.manual_seed(0)
    sae = cls(16, 64, 4) if cls is not ReLUSAE else cls(16, 64)
    sae.eval()
    x = torch.randn(8, 16)
    sae.latent_mask[:32] = False
    out = sae(x)
    assert (out.latents[:, :32] == 0).all() and torch.isfinite(out.x_hat).all()
    with torch.no_grad():
        sae.W_dec[:32] = torch.randn(32, 16)  # a masked latent's decoder row cannot matter
    torch.testing.assert_close(sae(x).x_hat, out.x_hat)


def test_auxk_gradients_reach_only_dead_latents_and_never_b_dec(sae):
    x = torch.randn(32, 16)
    out = sae(x)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 10, 40, 41, 63]] = True
    auxk_loss(sae, out.x, out.x - out.x_hat, dead, k_aux=3).backward()
    enc_cols = sae.encoder.grad.abs().sum(1) > 0  # latent i's encoder direction is row i of encoder
    dec_rows = sae.W_dec.grad.abs().sum(1) > 0
    assert enc_cols.any() and not (enc_cols & ~dead).any()
    assert dec_rows.any() and not (dec_rows & ~dead).any()
    # The auxiliary decode has no b_dec: its value is the dead latents' reconstruction of the residual alone.
    pre = sae.pre_activations(out.x).detach().masked_fill(~dead, float("-inf"))
    top = pre.topk(3, dim=-1)
    aux = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.clamp_min(0))
    residual = (out.x - out.x_hat).detach()
    expected = (residual - aux @ sae.W_dec).pow(2).sum(-1).mean() / (residual - residual.mean(0)).pow(2).sum(-1).mean()
    torch.testing.assert_close(auxk_loss(sae, out.x, out.x - out.x_hat, dead, k_aux=3), expected)


def test_auxk_ignores_latents_masked_out_of_the_forward_pass(sae):
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 10]] = True
    sae.latent_mask[3] = False
    out = sae(x)
    auxk_loss(sae, out.x, out.x - out.x_hat, dead, k_aux=3).backward()
    assert sae.W_dec.grad[3].abs().sum() == 0 and sae.W_dec.grad[10].abs().sum() > 0


def test_decoder_rows_start_at_unit_norm_and_encoder_is_their_transpose():
    sae = TopKSAE(16, 64, 4)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)


def test_parallel_gradient_removal_keeps_rows_on_the_sphere(sae):
    x = torch.randn(32, 16)
    out = sae(x)
    (out.x - out.x_hat).pow(2).sum().backward()
    sae.remove_parallel_decoder_grad()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert (parallel.abs() <= 1e-5 * sae.W_dec.grad.norm(dim=1) + 1e-6).all()
    # A step of length 1e-3 along the projected gradient changes row norms only to second order (~1e-6).
    with torch.no_grad():
        sae.W_dec -= 1e-3 * sae.W_dec.grad / sae.W_dec.grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    assert (sae.W_dec.norm(dim=1) - 1).abs().max() < 1e-5


@pytest.mark.parametrize("k", [0, 65])
def test_k_outside_range_is_rejected(k):
    with pytest.raises(ValueError, match="k ="):
        TopKSAE(16, 64, k)


def test_save_load_round_trip_in_saelens_layout(sae, tmp_path):
    save_sae(sae, tmp_path / "sae", extra={"hook_layer": 3})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["k"] == 4
    assert (tmp_path / "sae" / "sae_weights.safetensors").is_file()
    loaded = load_sae(tmp_path / "sae")
    x = torch.randn(4, 16)
    torch.testing.assert_close(loaded(x).x_hat, sae(x).x_hat)
    assert loaded.W_enc.shape == (16, 64)  # SAELens orientation
    assert set(load_file(tmp_path / "sae" / "sae_weights.safetensors")) == {"W_enc", "b_enc", "W_dec", "b_dec"}


def test_loading_a_directory_without_sae_is_a_clear_error(tmp_path):
    with pytest.raises(SarmInputError, match="no SAE here"):
        load_sae(tmp_path)


def test_geometric_median_resists_outliers():
    torch.manual_seed(0)
    cluster = torch.randn(99, 4) * 0.1
    points = torch.cat([cluster, torch.full((1, 4), 1000.0)])
    median = geometric_median(points)
    assert median.norm() < 0.2
    assert points.mean(0).norm() > 10


def test_a_non_finite_loss_stops_training_and_says_why():
    from sarm.errors import NumericalFault
    from sarm.sae.module import SAEModule

    module = SAEModule("topk", 64, 4, d_in=16)
    x = torch.randn(8, 16)
    x[3, 5] = float("nan")
    with pytest.raises(NumericalFault, match=r"SAE loss is nan at step 0; the batch itself holds 1 non-finite values"):
        module.training_step(x, 0)


def test_an_sae_width_that_disagrees_with_the_cache_is_refused(tiny_cache):
    import lightning as L

    from sarm.cache import TokenActivationDataModule
    from sarm.sae.module import SAEModule

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(
        SarmInputError, match="model.d_in = 48, but the activation cache holds hidden states of width 32"
    ):
        trainer.fit(
            SAEModule("topk", 64, 4, d_in=48), TokenActivationDataModule(str(tiny_cache["cache"]), batch_size=64)
        )


def test_the_sae_trainer_reads_its_data_module_through_activation_data(tmp_path):
    from sarm.cache import TokenActivationDataModule
    from sarm.sae.module import activation_data

    data = TokenActivationDataModule(str(tmp_path / "no-cache"))  # nothing is read to check it
    assert activation_data(data) is data
    with pytest.raises(
        SarmInputError,
        match="provides backbone_settings, hidden_size .* got object lacks backbone_settings, hidden_size",
    ):
        activation_data(object())
