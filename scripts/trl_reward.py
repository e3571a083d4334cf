"""TRL's ``RewardTrainer`` as the reference reward model, on sarm's truncated backbone and data split.

    python scripts/trl_reward.py [--model embedded:SmolLM2-135M-Instruct] [--layer 15] [--data builtin:planted]

This is the reward model most users know: ``AutoModelForSequenceClassification`` (a linear ``score``
head on the last token) trained with TRL's Bradley-Terry loss, optionally with LoRA. To make it a
fair reference for sarm, the inputs are the same:

* backbone: the model's first ``layer`` decoder layers only (``truncate_config`` before loading);
* data: the caller's train/val/test pairs (``split_by_prompt``), rendered by sarm's
  ``render_response`` and handed to TRL pre-tokenized (``chosen_ids`` / ``rejected_ids``), so the
  token ids are exactly sarm's: chat template, cut from the LEFT to ``max_length`` so the final
  ``<|im_end|>`` survives. (Left to itself, TRL 1.16 does not truncate at all: it renders the
  conversation and DROPS every pair with a side longer than ``max_length``. We pass
  ``max_length=None`` so nothing is dropped; our sequences are already at most ``max_length``.)
* reward position: the sequence-classification head reads the rightmost token that is not the pad
  token. SmolLM2's pad token is ``<|im_end|>``, the very token sarm reads, so the head would read
  the token before it. We pick a pad token that never ends a sequence (``<|endoftext|>`` there).
* margin: the pairs' ``margin`` (0 where absent) goes in TRL's ``margin`` column, as sarm uses it.
* accuracy: our own no-grad loop over val and test, mean(r_chosen > r_rejected), as sarm computes it.

Remaining differences, by design (this is the standard TRL recipe, not a copy of sarm's): the
sequence-classification model applies the backbone's final norm to the layer-L hidden state (sarm
reads the residual stream without it); one learning rate for adapters and head with TRL's linear
decay (sarm: separate head and LoRA learning rates).

RewardConfig defaults we override: ``gradient_checkpointing`` (TRL: on) is off, because with PEFT
it makes the embeddings require grad, so autograd would record every layer and LoRA on the last
layers would lose its point (no backward pass through the frozen layers below); ``bf16`` (TRL: on)
is off unless asked for, so CPU runs are float32 like sarm's.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import CLI

from sarm.backbone import load_tokenizer, resolve_model, truncate_config
from sarm.data.preference import load_preferences
from sarm.data.render import RenderedSequence, render_pair
from sarm.data.rows import PreferencePair
from sarm.data.splits import split_by_prompt


def train_trl_reward_model(
    model: str,
    layer: int,
    train: list[PreferencePair],
    val: list[PreferencePair],
    test: list[PreferencePair],
    *,
    max_length: int = 256,
    epochs: float = 1,
    lr: float = 1e-4,
    batch_size: int = 8,
    lora_r: int = 16,
    lora_last_layers: int | None = None,
    lora_target_modules: list[str] | None = None,
    output_dir: str | Path = "runs/compare_rm/trl",
    seed: int = 0,
    bf16: bool = False,
) -> dict:
    """Train a TRL reward model on ``train``; return its val/test pairwise accuracy and timings.

    Args:
        model: ``embedded:<name>``, a ``.gguf`` path or a local model directory (see ``resolve_model``).
        layer: keep the first this-many decoder layers.
        train, val, test: preference pairs (val and test are only scored, never trained on).
        max_length: sequences longer than this lose tokens from the left (sarm's rendering).
        epochs, lr, batch_size: TRL's ``num_train_epochs``, ``learning_rate``, ``per_device_train_batch_size``.
        lora_r: LoRA rank (alpha = 2r, no dropout).
        lora_last_layers: LoRA only on the last this-many kept layers; None: on all of them;
            0: no LoRA, full fine-tune.
        lora_target_modules: modules to adapt; None: peft's default for the architecture, which is
            what sarm's ``add_lora`` uses by default (``q_proj``, ``v_proj`` for Llama-style models).
        output_dir: TRL's output directory; only ``result.json`` is written there.
        seed: seeds the score head's initialization and the data order.
        bf16: bfloat16 mixed precision (for GPUs); float32 otherwise.

    Returns:
        ``test_accuracy``, ``val_accuracy`` (NaN for an empty split), ``train_seconds``, ``train_loss``,
        ``train_tokens`` (real tokens over all epochs), ``tokens_per_second``, ``test_pairs``,
        ``val_pairs``, ``train_pairs``, ``truncated_pairs`` (per split), ``trainable_parameters``
        (names), ``trainable_parameter_count``, ``pad_token``.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    if not train:
        raise ValueError("train: no pairs to train on")
    if lora_last_layers is not None and not 0 <= lora_last_layers <= layer:
        raise ValueError(f"lora_last_layers = {lora_last_layers}: expected None or 0..{layer}")
    output_dir = Path(output_dir)

    path = resolve_model(model)
    config = AutoConfig.from_pretrained(path, num_labels=1)
    if not 1 <= layer <= config.num_hidden_layers:
        raise ValueError(f"layer = {layer}: '{model}' has decoder layers 1..{config.num_hidden_layers}")
    truncate_config(config, layer)

    tokenizer = load_tokenizer(model)
    rendered = {
        name: [render_pair(tokenizer, pair, max_length) for pair in pairs]
        for name, pairs in (("train", train), ("val", val), ("test", test))
    }
    _pad_with_a_token_that_never_ends_a_sequence(
        tokenizer, [seq for pairs in rendered.values() for pair in pairs for seq in pair]
    )
    config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not this one

    peft_config = None
    if lora_last_layers != 0:
        layers = None if lora_last_layers is None else list(range(layer - lora_last_layers, layer))
        peft_config = LoraConfig(
            task_type="SEQ_CLS",
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules=lora_target_modules,
            layers_to_transform=layers,
            layers_pattern="layers" if layers else None,
            modules_to_save=["score"],  # the head is new: it must train (SEQ_CLS adds it too)
        )
    args = RewardConfig(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        max_length=None,  # already cut from the left by render_response; TRL would drop, not cut
        activation_checkpointing=False,  # = gradient_checkpointing (TRL: on), renamed; see the docstring
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        save_strategy="no",
        eval_strategy="no",  # val and test are scored below, by our own loop
        logging_strategy="no",
        disable_tqdm=False,  # keep the progress bar
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    train_dataset = Dataset.from_dict(
        {
            "chosen_ids": [chosen.input_ids for chosen, _ in rendered["train"]],
            "rejected_ids": [rejected.input_ids for _, rejected in rendered["train"]],
            "margin": [0.0 if pair.margin is None else float(pair.margin) for pair in train],
        }
    )

    set_seed(seed)  # the score head is initialized randomly at load time
    with _quiet_loading():
        network = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=torch.float32)
        trainer = RewardTrainer(
            model=network, args=args, train_dataset=train_dataset, processing_class=tokenizer, peft_config=peft_config
        )

    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    train_tokens = epochs * sum(len(c.input_ids) + len(r.input_ids) for c, r in rendered["train"])

    result = {
        "test_accuracy": pairwise_accuracy(trainer.model, rendered["test"], tokenizer.pad_token_id, batch_size),
        "val_accuracy": pairwise_accuracy(trainer.model, rendered["val"], tokenizer.pad_token_id, batch_size),
        "train_seconds": train_seconds,
        "train_loss": output.training_loss,
        "train_tokens": int(train_tokens),
        "tokens_per_second": train_tokens / train_seconds,
        "test_pairs": len(test),
        "val_pairs": len(val),
        "train_pairs": len(train),
        "truncated_pairs": {
            name: sum(c.truncated or r.truncated for c, r in pairs) for name, pairs in rendered.items()
        },
        "trainable_parameters": trainable,
        "trainable_parameter_count": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "pad_token": tokenizer.pad_token,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@contextmanager
def _quiet_loading():
    """Loading a truncated causal LM as a classifier reports the dropped layers and lm_head as
    "unexpected" and ``score`` as "missing": all intended, so keep transformers quiet meanwhile."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`: version skew, not ours to fix
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        transformers_logging.enable_progress_bar()


def _pad_with_a_token_that_never_ends_a_sequence(tokenizer, sequences: list[RenderedSequence]) -> None:
    """Make sure the sequence-classification head reads each sequence's own last token.

    It reads the rightmost token that differs from the pad token, so a pad token that also ends a
    sequence (SmolLM2 pads with ``<|im_end|>``) would move the reward one token to the left. Then
    pad with a special token that occurs in no sequence at all instead.
    """
    if tokenizer.pad_token_id not in {seq.input_ids[-1] for seq in sequences if seq.input_ids}:
        return
    used = {token_id for seq in sequences for token_id in seq.input_ids}
    for token, token_id in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids):
        if token_id not in used:
            tokenizer.pad_token = token
            return
    raise ValueError(
        f"the pad token {tokenizer.pad_token!r} ends some sequences, and no other special token "
        "is unused: the reward would be read before the last token"
    )


@torch.no_grad()
def pairwise_accuracy(
    model: torch.nn.Module, pairs: list[tuple[RenderedSequence, RenderedSequence]], pad_id: int, batch_size: int
) -> float:
    """mean(r_chosen > r_rejected) over rendered pairs; both sides of a batch in one forward pass."""
    if not pairs:
        return math.nan
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        sequences = [c.input_ids for c, _ in batch] + [r.input_ids for _, r in batch]
        length = max(map(len, sequences))
        ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):  # right padding, like TRL's collator
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        rewards = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.squeeze(-1)
        correct += (rewards[: len(batch)] > rewards[len(batch) :]).sum().item()
    return correct / len(pairs)


def main(
    model: str = "embedded:SmolLM2-135M-Instruct",
    layer: int = 15,
    data: str = "builtin:planted",
    num_pairs: int = 2000,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    max_length: int = 256,
    epochs: float = 1,
    lr: float = 1e-4,
    batch_size: int = 8,
    lora_r: int = 16,
    lora_last_layers: int | Literal["all"] | None = 3,
    output_dir: str = "runs/compare_rm/trl",
    seed: int = 0,
    bf16: bool = False,
) -> None:
    """Train TRL's RewardTrainer on sarm's truncated backbone and by-prompt split; print its result.

    Args:
        model: backbone.
        layer: decoder layers kept.
        data: a preference file, ``builtin:planted`` or a hub dataset name.
        num_pairs: pairs to generate, for ``builtin:planted``.
        split_fractions: train/val/test fractions, assigned by prompt.
        split_seed: seed of the split.
        max_length: longer sequences are cut from the left.
        epochs: TRL's ``num_train_epochs``.
        lr: TRL's one learning rate (adapters and head).
        batch_size: TRL's ``per_device_train_batch_size``.
        lora_r: LoRA rank (alpha = 2r).
        lora_last_layers: LoRA on the last this-many kept layers; ``all`` (or null): on every kept layer;
            0: full fine-tune.
        output_dir: where ``result.json`` is written.
        seed: seeds the score head's initialization and the data order.
        bf16: bfloat16 mixed precision (for GPUs).
    """
    splits = split_by_prompt(load_preferences(data, num_pairs=num_pairs), split_fractions, split_seed)
    result = train_trl_reward_model(
        model,
        layer,
        splits["train"],
        splits["val"],
        splits["test"],
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        lora_r=lora_r,
        lora_last_layers=None if lora_last_layers == "all" else lora_last_layers,
        output_dir=output_dir,
        seed=seed,
        bf16=bf16,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "trainable_parameters"}, indent=2))


if __name__ == "__main__":
    CLI(main, as_positional=False)
