"""The ``sarm`` command table (sarm/cli.py) and the scripts' jsonargparse command lines."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from commands import cache_pairs
from conftest import random_sarm_export

from sarm.cache import CacheSettings
from sarm.cli import COMMANDS, main

ROOT = Path(__file__).parents[1]
SUBCOMMANDS = (
    "fit",
    "validate",
    "test",
    "predict",
    "cache",
    "attribute",
    "score",
    "report",
    "recovery",
    "serve",
    "rerank",
    "drift",
)


def record_calls(monkeypatch, name: str) -> list[dict]:
    """Replace ``COMMANDS[name]``'s function by one with its signature that records its keyword arguments."""
    module_name, attribute = COMMANDS[name].split(":")
    module = importlib.import_module(module_name)
    calls = []

    @functools.wraps(getattr(module, attribute))  # the signature and docstring jsonargparse reads
    def recorder(**kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(module, attribute, recorder)
    return calls


def test_help_lists_every_subcommand_without_importing_torch():
    code = (
        "import sys; from sarm.cli import main; main(['--help']); "
        "print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "[]"  # the table's functions are imported only when their command runs
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert listed == set(SUBCOMMANDS)
    recovery_line = next(line for line in lines if line.startswith("  recovery "))
    assert "Ground-truth recovery of a SARM" in recovery_line  # the first line of its docstring


def test_an_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recover"])
    assert exit_info.value.code == 2
    assert "unknown subcommand 'recover'" in capsys.readouterr().err


def test_cache_keeps_its_flat_options_and_reads_the_shipped_configs(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["cache", "--help"])
    help_text = capsys.readouterr().out
    from sarm.cache.writer import cache_activations

    names = [f.name for f in dataclasses.fields(CacheSettings)]
    names += [p for p in inspect.signature(cache_activations).parameters if p != "settings"]
    for name in names:
        assert f"--{name} " in help_text
    assert "--settings" not in help_text

    calls = record_calls(monkeypatch, "cache")
    for config in ("configs/demo/cache.yaml", "configs/rewardbench2/cache.yaml", "configs/llama3_8b/cache.yaml"):
        main(["cache", "--config", str(ROOT / config), "--layer", "3"])  # the command line overrides the file
        given = yaml.safe_load((ROOT / config).read_text()) | {"layer": 3}
        call = calls.pop()
        settings = call.pop("settings")
        assert isinstance(settings, CacheSettings)
        received = dataclasses.asdict(settings) | call
        assert set(received) == set(names)
        for key, value in given.items():
            assert received[key] == (tuple(value) if isinstance(value, list) else value), (config, key)


CONFIGS = {
    "attribute": {"sarm": "runs/x/sarm", "data": "pairs.jsonl", "top": 3, "split_fractions": (0.5, 0.25, 0.25)},
    "score": {"model": "runs/x/sarm", "data": "pairs.jsonl", "normalize": True, "copy_columns": ("id",)},
    "report": {"sarm": "runs/x/sarm", "data": ["a.jsonl", "b.jsonl"], "contexts": 2, "dtype": "float32"},
    "recovery": {"sarm": "runs/x/sarm", "cache": "runs/x/cache", "split": "val", "output": "recovery.json"},
    "serve": {"model": "runs/x/sarm", "port": 8123, "workers": 2, "max_batch_delay": 0.05, "normalize": True},
    "rerank": {"model": "runs/x/sarm", "data": "prompts.jsonl", "top_features": 3, "copy_columns": ("id",)},
    "drift": {"model": "runs/x/sarm", "samples": "s.jsonl", "reference": "runs/x/cache", "threshold": 0.02},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_own_command_takes_a_config(name, monkeypatch, tmp_path):
    assert set(CONFIGS) | {"cache"} == set(COMMANDS)  # a new command gets a case here
    calls = record_calls(monkeypatch, name)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in CONFIGS[name].items()}))
    main([name, "--config", str(config)])
    (call,) = calls
    module_name, attribute = COMMANDS[name].split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module_name), attribute)).parameters
    assert set(call) == set(parameters)
    for key, parameter in parameters.items():
        assert call[key] == CONFIGS[name].get(key, parameter.default), key


def test_print_config_prints_an_own_commands_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recovery", "--sarm", "runs/x/sarm", "--print_config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == {
        "sarm": "runs/x/sarm",
        "cache": "runs/demo/cache",
        "split": "test",
        "output": None,
    }


def test_recovery_runs_from_a_config_on_planted_data(tmp_path, tiny_model_dir, capsys):
    main(cache_pairs("builtin:planted", tiny_model_dir, tmp_path / "cache", max_length=96, num_pairs=60))
    random_sarm_export(tmp_path / "sarm", tiny_model_dir, seed=0, max_length=96, k=8)
    config = tmp_path / "recovery.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sarm": str(tmp_path / "sarm"),
                "cache": str(tmp_path / "cache"),
                "split": "train",
                "output": str(tmp_path / "recovery.json"),
            }
        )
    )
    capsys.readouterr()
    main(["recovery", "--config", str(config)])

    result = json.loads((tmp_path / "recovery.json").read_text())
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert sum(row["pairs"] for row in result["attributes"]) == manifest["split_pairs"]["train"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("attribute") and printed[-1].startswith("distractors")
    assert [line.split()[0] for line in printed[1:-1]] == [row["attribute"] for row in result["attributes"]]


SCRIPTS = sorted(path.name for path in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_a_jsonargparse_help(script):
    out = subprocess.run([sys.executable, f"scripts/{script}", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--config CONFIG" in out.stdout and "--print_config" in out.stdout


def test_a_script_takes_a_config(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text("d_in: 8\nn_latents: 32\nk: 2\nbatch: 16\nsteps: 1\n")
    out = subprocess.run(
        [sys.executable, "scripts/bench_sae.py", "--config", str(config), "--batch", "24"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "d_in=8 n_latents=32 k=2 batch=24 fp32" in out.stdout and "median of 1 steps" in out.stdout
    assert "sarm " in out.stdout  # sarm's own step was timed
