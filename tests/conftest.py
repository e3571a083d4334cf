"""Shared fixtures: tiny tokenizers and random models built in-process (no download)."""

from __future__ import annotations

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello how are you today I am fine thank you",
    "what is the capital of france paris is the capital",
    "please write a python function that adds two numbers",
    "I cannot help with that request it is harmful",
    "user assistant system answer question",
]


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer with ChatML specials and template, trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def tiny_config(family: str, vocab_size: int, num_layers: int = 4):
    """A random, tiny decoder config of a given architecture family."""
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=256,
    )
    if family == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(**common)
    raise ValueError(family)


def save_tiny_model(path, family: str = "llama", num_layers: int = 4, seed: int = 0):
    """Write a random tiny causal LM + the tiny tokenizer to ``path`` (a local model directory)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer), num_layers))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


GOOD = ["thank you, here is the answer", "happy to help with that", "the capital is paris"]
BAD = ["go away", "that is a stupid question", "I will not answer you"]


def write_toy_pairs(path, n: int = 48):
    """A JSONL preference file whose chosen side is polite and rejected side rude; 3 pairs per prompt."""
    import json

    rows = [
        {"prompt": f"question {i % 16} about the fox", "chosen": GOOD[i % 3] + f" number {i}",
         "rejected": BAD[i % 3] + f" number {i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_model_dir):
    """An activation cache of 48 toy pairs through the tiny model, written by `sarm cache`."""
    from sarm.cli import main

    root = tmp_path_factory.mktemp("tiny-cache")
    data = write_toy_pairs(root / "pairs.jsonl")
    args = ["--data", str(data), "--model", tiny_model_dir, "--layer", "2", "--max_length", "48",
            "--split_fractions", "[0.5, 0.25, 0.25]", "--batch_size", "8", "--shard_tokens", "300"]
    main(["cache", *args, "--output", str(root / "cache")])
    return {"cache": root / "cache", "data": data, "cache_args": args}


def run_command(command: list[str], timeout: int = 300):
    """Run a subprocess; on failure, fail the test with the end of its stderr."""
    import subprocess

    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stderr[-4000:]}"
    return result
