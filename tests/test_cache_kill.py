"""A `sarm cache` killed mid-run leaves nothing a later run trusts; the next run yields the same cache
as an uninterrupted one."""

import json
import signal
import subprocess
import time

import torch
from commands import SARM_CLI, cache_pairs
from conftest import run_command, write_toy_pairs
from safetensors.torch import load_file


def cache_command(data, model, output):
    return [
        *SARM_CLI,
        *cache_pairs(data, model, output, batch_size=2, shard_tokens=20, dtype="float32", accelerator="cpu"),
    ]


def contents(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    tensors = {s["file"]: load_file(directory / s["file"]) for s in manifest["shards"]}
    return manifest, tensors


def test_killed_cache_is_redone_to_the_uninterrupted_result(tiny_model_dir, tmp_path):
    data = write_toy_pairs(tmp_path / "pairs.jsonl", n=400)
    run_command(cache_command(data, tiny_model_dir, tmp_path / "whole"))

    killed, building = tmp_path / "killed", tmp_path / ".killed.partial"  # built beside, renamed when whole
    process = subprocess.Popen(
        cache_command(data, tiny_model_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(building.glob("shard-*"))) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(building.glob("shard-*")) and not killed.exists()  # killed mid-run: nothing at the output

    run_command(cache_command(data, tiny_model_dir, killed))
    (whole_manifest, whole), (again_manifest, again) = contents(tmp_path / "whole"), contents(killed)
    assert again_manifest == whole_manifest  # same fingerprint, shards, counts
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert not building.exists()  # the killed run's build directory is gone
    for name, shard in whole.items():
        for key, tensor in shard.items():
            assert torch.equal(again[name][key], tensor), (name, key)
