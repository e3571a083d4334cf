"""The real embedded backbone (SmolLM2-135M-Instruct) and the shared RewardBench 2 data.

Selected with `-m integration` (`make test-integration`); the default suite skips them.
"""

from pathlib import Path

import pytest
import torch

from sarm.backbone import DEFAULT_BACKBONE, TruncatedBackbone, load_tokenizer, resolve_model
from sarm.data.preference import load_preferences
from sarm.data.render import render_pair
from sarm.data.splits import split_by_prompt

pytestmark = pytest.mark.integration
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "rewardbench2_safety.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DEFAULT_BACKBONE)


def test_embedded_model_is_converted_once_and_truncates_to_the_full_models_hidden_state(tokenizer):
    from transformers import AutoModelForCausalLM

    path = resolve_model(DEFAULT_BACKBONE)
    assert (Path(path) / "model.safetensors").is_file()
    backbone = TruncatedBackbone(DEFAULT_BACKBONE)
    assert (backbone.depth, backbone.layer, backbone.hidden_size) == (30, 15, 576)
    ids = tokenizer("The capital of France is Paris.", return_tensors="pt").input_ids
    full = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        expected = full(input_ids=ids, output_hidden_states=True).hidden_states[15]
        got = backbone(ids)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def test_rewardbench_pairs_render_with_the_response_last(tokenizer):
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is absent (shared data lives beside the checkout)")
    pairs = load_preferences(SHARED)
    assert len(pairs) == 1350
    splits = split_by_prompt(pairs, (0.7, 0.15, 0.15), seed=0)
    prompts = {name: {p.prompt_id for p in members} for name, members in splits.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["val"])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for pair in pairs[:50]:
        chosen, rejected = render_pair(tokenizer, pair, max_length=512)
        for seq, text in ((chosen, pair.chosen), (rejected, pair.rejected)):
            assert seq.input_ids[-1] == end
            if not seq.truncated:
                assert tokenizer.decode(seq.input_ids[seq.response_start : -1]).strip() == text.strip()
