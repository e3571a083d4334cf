"""The output directory of `sarm cache` is sarm's alone: nothing sarm did not write is deleted, a directory
holding anything else is refused with what it holds, and two runs into one directory never mix."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from commands import SARM_CLI, flags
from conftest import run_command
from safetensors.torch import load_file

from sarm.cli import main


def cache(tiny_cache, output, *extra: str) -> None:
    main(["cache", *tiny_cache["cache_args"], "--dtype", "float32", *extra, "--output", str(output)])


def refused(capsys, run) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sarm: error:")]
    assert len(lines) == 1
    return lines[0]


def test_a_directory_of_user_files_is_refused_and_keeps_every_file(tiny_cache, tmp_path, capsys):
    output = tmp_path / "repo"
    (output / ".git" / "objects").mkdir(parents=True)
    (output / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (output / ".env").write_text("TOKEN=secret\n")
    (output / ".bashrc").write_text("alias ll='ls -l'\n")
    (output / "shard-notes.txt").write_text("my notes\n")
    before = sorted(str(p.relative_to(output)) for p in output.rglob("*"))

    message = refused(capsys, lambda: cache(tiny_cache, output))
    assert (
        f"{output}: exists and is not an activation cache (holds 4 entries: .bashrc, .env, .git, shard-notes.txt)"
        in message
    )
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == before
    assert (output / ".env").read_text() == "TOKEN=secret\n"
    assert not any(p.name.startswith(".repo.") for p in tmp_path.iterdir())  # no lock or build directory left


def test_a_file_as_output_and_someone_elses_manifest_are_refused(tiny_cache, tmp_path, capsys):
    a_file = tmp_path / "out.txt"
    a_file.write_text("keep me\n")
    assert f"{a_file}: exists and is not a directory" in refused(capsys, lambda: cache(tiny_cache, a_file))
    assert a_file.read_text() == "keep me\n"

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text('{"name": "a web app", "version": "1.0"}\n')
    message = refused(capsys, lambda: cache(tiny_cache, theirs))
    assert f"{theirs / 'manifest.json'}: not an activation cache's manifest" in message
    assert json.loads((theirs / "manifest.json").read_text())["name"] == "a web app"


def test_an_empty_directory_is_filled_and_a_cache_of_other_settings_is_refused_naming_them(
    tiny_cache, tmp_path, capsys
):
    output = tmp_path / "empty"
    output.mkdir()
    cache(tiny_cache, output)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["layer"] == 2 and not (output / ".sarm-partial").exists()

    message = refused(capsys, lambda: cache(tiny_cache, output, "--layer", "1"))
    assert f"{output}: holds an activation cache of other data or settings (layer 2 there, 1 asked)" in message
    assert json.loads((output / "manifest.json").read_text()) == manifest  # untouched


def test_filesystem_errors_are_one_line_naming_the_path_and_exit_1(tiny_cache, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    with pytest.raises(SystemExit) as exit_info:
        cache(tiny_cache, a_file / "cache")  # a cache inside a file
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"sarm: error: {a_file}: " in err.splitlines()[-1] and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_location_is_one_line_and_exit_1(tiny_cache, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exit_info:
            cache(tiny_cache, locked / "cache")
    finally:
        locked.chmod(0o700)
    assert exit_info.value.code == 1
    assert "Permission denied" in capsys.readouterr().err.splitlines()[-1]


def cache_command(tiny_cache, output, layer: int) -> list[str]:
    args = list(tiny_cache["cache_args"])
    args[args.index("--layer") + 1] = str(layer)
    return [*SARM_CLI, "cache", *args, *flags({"dtype": "float32", "accelerator": "cpu"}), "--output", str(output)]


def read_cache(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    return manifest, {s["file"]: load_file(directory / s["file"]) for s in manifest["shards"]}


def test_two_runs_into_one_directory_one_waits_and_refuses_and_the_cache_is_a_clean_one(tiny_cache, tmp_path):
    shared = tmp_path / "shared"
    runs = [
        subprocess.Popen(
            cache_command(tiny_cache, shared, layer), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for layer in (2, 1)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    winner = 2 if results[0][0] == 0 else 1
    loser_err = results[1 if winner == 2 else 0][1]
    assert f"{shared}: holds an activation cache of other data or settings" in loser_err
    assert "Traceback" not in loser_err

    clean = tmp_path / "clean"
    run_command(cache_command(tiny_cache, clean, winner))
    (manifest, shards), (clean_manifest, clean_shards) = read_cache(shared), read_cache(clean)
    assert manifest == clean_manifest and manifest["layer"] == winner
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in clean.iterdir())
    for name, tensors in clean_shards.items():
        for key, tensor in tensors.items():
            assert torch.equal(shards[name][key], tensor), (name, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "shared"]  # no lock or build directory left
