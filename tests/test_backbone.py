"""The truncated backbone returns the residual stream after layer L and builds only L layers."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from sarm.backbone import TruncatedBackbone, load_tokenizer, resolve_model
from sarm.errors import SarmInputError
from sarm.testing import save_tiny_model


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt_neox"])
@pytest.mark.parametrize("layer", [1, 3])
def test_hidden_state_equals_full_model_residual_stream(tmp_path, family, layer):
    path = save_tiny_model(tmp_path / family, family, num_layers=4)
    full = AutoModelForCausalLM.from_pretrained(path).eval()
    backbone = TruncatedBackbone(path, layer=layer)
    ids = torch.randint(0, full.config.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        got = backbone(ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_only_the_first_layers_are_built(tiny_model_dir):
    backbone = TruncatedBackbone(tiny_model_dir, layer=2)
    assert backbone.depth == 4 and backbone.layer == 2
    assert len(backbone.model.layers) == 2
    n_params = sum(p.numel() for p in backbone.parameters())
    assert n_params < sum(p.numel() for p in TruncatedBackbone(tiny_model_dir, layer=4).parameters())


def test_default_layer_is_half_the_depth(tiny_model_dir):
    assert TruncatedBackbone(tiny_model_dir).layer == 2


def test_no_final_norm_is_applied(tiny_model_dir):
    # At full depth the output must differ from HF's last hidden state, which is post-norm.
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    backbone = TruncatedBackbone(tiny_model_dir, layer=4)
    ids = torch.randint(0, full.config.vocab_size, (1, 6))
    with torch.no_grad():
        normed = full.model(input_ids=ids).last_hidden_state
        raw = backbone(ids)
    assert not torch.allclose(raw, normed, atol=1e-3)
    torch.testing.assert_close(full.model.norm(raw), normed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 5, -1])
def test_layer_out_of_range_is_a_clear_error(tiny_model_dir, layer):
    with pytest.raises(SarmInputError, match=r"backbone.layer = .*1\.\.4"):
        TruncatedBackbone(tiny_model_dir, layer=layer)


def test_local_directory_passes_through_and_missing_gguf_is_reported(tiny_model_dir, tmp_path):
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    with pytest.raises(SarmInputError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    assert load_tokenizer(tiny_model_dir).pad_token is not None
