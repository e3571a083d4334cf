"""Tiny random tokenizers and causal LMs built in-process (no download), for tests and benchmarks.

They exercise every code path the real backbone does (chat template, padding, truncation, layer cut)
at a tiny fraction of the cost; nothing here is meant to produce meaningful rewards.
"""

from __future__ import annotations

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
    raise ValueError(f"family = {family!r}: expected 'llama', 'qwen2' or 'gpt_neox'")


def save_tiny_model(path, family: str = "llama", num_layers: int = 4, seed: int = 0) -> str:
    """Write a random tiny causal LM + the tiny tokenizer to ``path`` (a local model directory)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer), num_layers))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def quiet_trainer(**kwargs):
    """A Lightning ``Trainer`` with nothing but the run (no logger, checkpoints, bars or model summary), for
    tests and benchmarks; ``kwargs`` set the rest (and may switch any of those back on)."""
    import lightning as L

    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(quiet | kwargs))
