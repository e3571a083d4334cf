"""A corrupt or hand-edited activation cache ends in one named line (`sarm: error: <file>: field '<name>': …`,
exit 2), never in a traceback from inside safetensors or torch, and never trains on the wrong numbers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from commands import fit_sae
from safetensors.torch import load_file, save_file

from sarm.cli import main


def edit_manifest(**fields):
    def edit(cache):
        manifest = json.loads((cache / "manifest.json").read_text())
        manifest.update(fields)
        (cache / "manifest.json").write_text(json.dumps(manifest))

    return edit


def edit_first_shard_record(**fields):
    def edit(cache):
        manifest = json.loads((cache / "manifest.json").read_text())
        manifest["shards"][0].update(fields)
        (cache / "manifest.json").write_text(json.dumps(manifest))

    return edit


def first_shard(cache):
    return cache / json.loads((cache / "manifest.json").read_text())["shards"][0]["file"]


def rewrite_first_shard(change):
    def edit(cache):
        path = first_shard(cache)
        tensors = load_file(path)
        change(tensors)
        save_file(tensors, path)

    return edit


def truncate_first_shard(cache):
    path = first_shard(cache)
    path.write_bytes(path.read_bytes()[:200])


CASES = {  # name: (edit, the file the error names, what the line must say)
    "manifest-not-json": (
        lambda c: (c / "manifest.json").write_text('{"version": 2,'),
        "manifest.json",
        "not valid JSON",
    ),
    "layer-not-a-number": (edit_manifest(layer="two"), "manifest.json", "field 'layer': expected a positive integer"),
    "hidden-size-zero": (edit_manifest(hidden_size=0), "manifest.json", "field 'hidden_size'"),
    "unknown-dtype": (edit_manifest(dtype="float8"), "manifest.json", "field 'dtype'"),
    "older-version": (edit_manifest(version=1), "manifest.json", "field 'version': 1: a cache of another sarm"),
    "sequences-not-twice-pairs": (edit_manifest(num_sequences=7), "manifest.json", "field 'num_sequences'"),
    "no-shards": (edit_manifest(shards=[]), "manifest.json", "field 'shards'"),
    "shard-outside-cache": (
        edit_first_shard_record(file="../pairs.jsonl"),
        "manifest.json",
        "field 'shards[0].file': '../pairs.jsonl' is not a file name",
    ),
    "shard-count-text": (edit_first_shard_record(num_tokens="many"), "manifest.json", "field 'shards[0].num_tokens'"),
    "shard-missing": (lambda c: first_shard(c).unlink(), "shard-", "missing (the cache is incomplete"),
    "shard-truncated": (truncate_first_shard, "shard-", "not a readable safetensors shard"),
    "shard-tensor-missing": (rewrite_first_shard(lambda t: t.pop("token_seq")), "shard-", "field 'token_seq': missing"),
    "shard-wrong-width": (
        rewrite_first_shard(lambda t: t.update(tokens=t["tokens"][:, :5].contiguous())),
        "shard-",
        "field 'tokens'",
    ),
    "shard-wrong-dtype": (
        rewrite_first_shard(lambda t: t.update(last=t["last"].to(torch.float16))),
        "shard-",
        "field 'last': torch.float16",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_corrupt_cache_is_one_named_line_and_exit_2(case, tiny_cache, tmp_path, capsys):
    edit, file, says = CASES[case]
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache["cache"], cache)
    edit(cache)
    with pytest.raises(SystemExit) as exit_info:
        main(fit_sae(cache, tmp_path, epochs=1))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sarm: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"sarm: error: {cache}/{file}") and says in lines[0], lines[0]
    assert not (tmp_path / "sae").exists()
