"""Scoring throughput: SARM against the dense-head reward model on the same backbone, in one run.

Both score the same responses through one shared truncated backbone and tokenizer; they differ only
in what the head reads (SAE features vs the standardized hidden state). The SAE is the trained one
given by ``--sae`` (default: the demo's), else a random TopK SAE of the demo's shape.

    python scripts/bench_score.py [--model embedded:SmolLM2-135M-Instruct] [--layer 15] [--responses 128]
        [--device cuda] [--dtype bfloat16]

Prints tokens/s of each (best of ``--repeats`` interleaved runs) and SARM / dense.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import CLI

from sarm.backbone import TruncatedBackbone, load_tokenizer
from sarm.data.preference import load_preferences
from sarm.data.render import render_response
from sarm.reward.inference import RewardModel
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.sae import TopKSAE, load_sae


def main(
    model: str = "embedded:SmolLM2-135M-Instruct",
    layer: int = 15,
    sae: str = "runs/demo/sae/export",
    pooling: Literal["last", "mean"] = "last",
    responses: int = 128,
    batch_size: int = 16,
    max_length: int = 256,
    repeats: int = 3,
    device: str = "cpu",
    dtype: str = "float32",
) -> None:
    """Scoring throughput of a SARM and of the dense-head reward model on one shared truncated backbone.

    Args:
        model: backbone.
        layer: decoder layers kept.
        sae: a trained SAE export; a random TopK SAE (2,048 latents, k = 128) when it does not exist.
        pooling: where the head reads the response: its last token or the mean over its tokens.
        responses: responses scored (the chosen sides of built-in planted pairs).
        batch_size: responses per forward pass.
        max_length: longer responses are cut from the left.
        repeats: interleaved timed runs; the best of each is reported.
        device: ``cpu`` or ``cuda`` (backbone and heads; each run ends with its rewards on the CPU).
        dtype: the backbone's weights (``bfloat16`` on GPUs); the heads read its hidden states in float32.
    """
    torch.manual_seed(0)

    backbone = TruncatedBackbone(model, layer, dtype).requires_grad_(False)
    tokenizer = load_tokenizer(model)
    d = backbone.hidden_size
    autoencoder = load_sae(sae) if Path(sae, "cfg.json").is_file() else TopKSAE(d, 2048, 128)
    config = {"backbone": {"model": model, "layer": layer, "max_length": max_length}}
    models = {}
    for name, network in (("dense", DenseNetwork(d, pooling)), ("sarm", SARMNetwork(autoencoder, pooling))):
        network.head.weight.data.normal_()
        models[name] = RewardModel(network, backbone, tokenizer, config).to(device)

    pairs = load_preferences("builtin:planted", num_pairs=responses)
    prompts, texts = [p.prompt for p in pairs], [p.chosen for p in pairs]
    tokens = sum(len(render_response(tokenizer, p, r, max_length).input_ids) for p, r in zip(prompts, texts))
    models["dense"].score(prompts[:batch_size], texts[:batch_size], batch_size)  # warm-up

    best = {name: float("inf") for name in models}
    for _ in range(repeats):
        for name, reward_model in models.items():
            start = time.perf_counter()
            reward_model.score(prompts, texts, batch_size)
            best[name] = min(best[name], time.perf_counter() - start)
    on = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(
        f"scoring {responses} responses ({tokens} tokens), {model} layer {layer}, "
        f"pooling {pooling}, SAE {autoencoder.n_latents} latents, backbone {dtype}, {on}"
    )
    for name, seconds in best.items():
        print(f"{name:<6} {tokens / seconds:>9,.0f} tokens/s")
    print(f"sarm / dense: {best['dense'] / best['sarm']:.3f}x throughput")


if __name__ == "__main__":
    CLI(main, as_positional=False)
