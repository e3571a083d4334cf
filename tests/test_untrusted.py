"""Loading other people's files never runs their code; writing never escapes the output directory."""

from __future__ import annotations

import os

import pytest
import torch
from commands import QUIET_CPU, flags

from sarm.cli import main


class Payload:
    """What a malicious checkpoint carries: unpickling it would create ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def sae_command(command: str, cache, root) -> list[str]:
    options = {
        "model": "sarm.sae.SAEModule",
        "model.n_latents": 16,
        "model.k": 4,
        "data": "sarm.cache.TokenActivationDataModule",
        "data.cache_dir": cache,
        **QUIET_CPU,
        "trainer.enable_checkpointing": None,  # Lightning's default
        "trainer.default_root_dir": root,
    }
    return [command, *flags(options)]


def test_checkpoints_load_with_weights_only_by_default(tmp_path, tiny_cache, capsys, monkeypatch):
    # Even where the environment turns torch's own default off, sarm's CLI asks for weights_only.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": Payload(str(marker))}, evil)
    with pytest.raises(SystemExit) as exit_:
        main([*sae_command("validate", tiny_cache["cache"], tmp_path), "--ckpt_path", str(evil)])
    assert exit_.value.code == 2
    assert not marker.exists()  # the payload never ran
    err = capsys.readouterr().err
    assert f"sarm: error: {evil}: refused to unpickle" in err and "Traceback" not in err


def test_no_source_file_loads_pickles():
    """Every weight file sarm reads is safetensors; the only unpickling is Lightning's, guarded above."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("sarm", "scripts")
        for path in (root / folder).rglob("*.py")
        if any(call in path.read_text() for call in ("torch.load(", "pickle.load", "trust_remote_code=True"))
    ]
    assert offenders == []
