"""`sarm cache` on 2 CPU processes (DDP, gloo): one manifest, every token once, the same activations."""

import json

import torch
from commands import SARM_CLI
from conftest import run_command
from safetensors.torch import load_file


def read_cache(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    tokens, last = {}, {}
    for shard in manifest["shards"]:
        data = load_file(directory / shard["file"])
        for seq, pos, h in zip(data["token_seq"].tolist(), data["token_pos"].tolist(), data["tokens"]):
            assert (seq, pos) not in tokens, "a token written twice"
            tokens[(seq, pos)] = h
        for seq, h in zip(data["seq"].tolist(), data["last"]):
            assert seq not in last, "a sequence written twice"
            last[seq] = h
    return manifest, tokens, last


def test_two_ranks_write_one_cache_without_duplicates_or_gaps(tiny_model_dir, tiny_cache, tmp_path):
    args = [*tiny_cache["cache_args"], "--dtype", "float32", "--accelerator", "cpu", "--shard_tokens", "200"]
    for devices in (1, 2):
        extra = ["--devices", "2", "--strategy", "ddp"] if devices == 2 else []
        run_command([*SARM_CLI, "cache", *args, *extra, "--output", str(tmp_path / f"cache-{devices}")])
    one, two = read_cache(tmp_path / "cache-1"), read_cache(tmp_path / "cache-2")
    assert {s["file"].split("-")[1] for s in two[0]["shards"]} == {"r0", "r1"}  # both ranks wrote shards
    assert two[0]["num_tokens"] == one[0]["num_tokens"] == len(two[1])
    assert two[1].keys() == one[1].keys() and two[2].keys() == one[2].keys() == set(range(two[0]["num_sequences"]))
    for key in one[1]:
        torch.testing.assert_close(two[1][key], one[1][key], atol=1e-5, rtol=1e-4)
    for seq in one[2]:
        torch.testing.assert_close(two[2][seq], one[2][seq], atol=1e-5, rtol=1e-4)
    assert sum(s["split_tokens"]["train"] for s in two[0]["shards"]) == sum(
        s["split_tokens"]["train"] for s in one[0]["shards"]
    )
