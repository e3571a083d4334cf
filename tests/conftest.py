"""Shared fixtures: tiny tokenizers and random models built in-process (no download)."""

from __future__ import annotations

import pytest

from sarm.testing import build_tiny_tokenizer, save_tiny_model  # noqa: F401 (tests import them from here)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


def random_sarm_export(directory, model_dir, seed: int, max_length: int, k: int = 4, **export_options):
    """An exported SARM on ``model_dir``'s layer 2: a random TopK SAE (32 → 64 latents, ``k``), mean pooling and a
    random head (``torch.manual_seed(seed)``); ``export_options`` go to ``save_reward_model`` (e.g. ``reward_norm``)."""
    import torch

    from sarm.reward.export import save_reward_model
    from sarm.reward.network import SARMNetwork
    from sarm.sae import TopKSAE

    torch.manual_seed(seed)
    network = SARMNetwork(TopKSAE(32, 64, k), "mean")
    with torch.no_grad():
        network.head.weight.normal_()
    backbone = {"model": model_dir, "layer": 2, "max_length": max_length}
    return save_reward_model(directory, network, backbone, **export_options)


GOOD = ["thank you, here is the answer", "happy to help with that", "the capital is paris"]
BAD = ["go away", "that is a stupid question", "I will not answer you"]


def write_toy_pairs(path, n: int = 48):
    """A JSONL preference file whose chosen side is polite and rejected side rude; 3 pairs per prompt."""
    import json

    rows = [
        {
            "prompt": f"question {i % 16} about the fox",
            "chosen": GOOD[i % 3] + f" number {i}",
            "rejected": BAD[i % 3] + f" number {i}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_model_dir):
    """An activation cache of 48 toy pairs through the tiny model, written by `sarm cache`."""
    from commands import cache_args

    from sarm.cli import main

    root = tmp_path_factory.mktemp("tiny-cache")
    data = write_toy_pairs(root / "pairs.jsonl")
    args = cache_args(data, tiny_model_dir, split_fractions=[0.5, 0.25, 0.25], batch_size=8, shard_tokens=300)
    main(["cache", *args, "--output", str(root / "cache")])
    return {"cache": root / "cache", "data": data, "cache_args": args}


def run_command(command: list[str], timeout: int = 300):
    """Run a subprocess; on failure, fail the test with the end of its stderr."""
    import subprocess

    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stderr[-4000:]}"
    return result
