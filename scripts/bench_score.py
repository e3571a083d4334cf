"""Scoring throughput: SARM against the dense-head reward model on the same backbone, in one run.

Both score the same responses through one shared truncated backbone and tokenizer; they differ only
in what the head reads (SAE features vs the standardized hidden state). The SAE is the trained one
given by ``--sae`` (default: the demo's), else a random TopK SAE of the demo's shape.

    python scripts/bench_score.py [--model embedded:SmolLM2-135M-Instruct] [--layer 15] [--responses 128]

Prints tokens/s of each (best of ``--repeats`` interleaved runs) and SARM / dense.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sarm.backbone import TruncatedBackbone, load_tokenizer
from sarm.data.preference import load_preferences
from sarm.data.render import render_response
from sarm.reward.inference import RewardModel
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.sae import TopKSAE, load_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--sae", default="runs/demo/sae/export")
    parser.add_argument("--pooling", default="last", choices=("last", "mean"))
    parser.add_argument("--responses", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    backbone = TruncatedBackbone(args.model, args.layer).requires_grad_(False)
    tokenizer = load_tokenizer(args.model)
    d = backbone.hidden_size
    sae = load_sae(args.sae) if Path(args.sae, "cfg.json").is_file() else TopKSAE(d, 2048, 128)
    config = {"backbone": {"model": args.model, "layer": args.layer, "max_length": args.max_length}}
    models = {}
    for name, network in (("dense", DenseNetwork(d, args.pooling)), ("sarm", SARMNetwork(sae, args.pooling))):
        network.head.weight.data.normal_()
        models[name] = RewardModel(network, backbone, tokenizer, config)

    pairs = load_preferences("builtin:planted", num_pairs=args.responses)
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    tokens = sum(len(render_response(tokenizer, p, r, args.max_length).input_ids) for p, r in zip(prompts, responses))
    models["dense"].score(prompts[:args.batch_size], responses[:args.batch_size], args.batch_size)  # warm-up

    best = {name: float("inf") for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.score(prompts, responses, args.batch_size)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"scoring {args.responses} responses ({tokens} tokens), {args.model} layer {args.layer}, "
          f"pooling {args.pooling}, SAE {sae.n_latents} latents, {torch.get_num_threads()} threads")
    for name, seconds in best.items():
        print(f"{name:<6} {tokens / seconds:>9,.0f} tokens/s")
    print(f"sarm / dense: {best['dense'] / best['sarm']:.3f}x throughput")


if __name__ == "__main__":
    main()
