"""A stopped run never looks like success: SIGTERM and SIGINT end every command with one line saying where it
stopped and how to go on, and exit status 128 + the signal (143, 130)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from commands import SARM_CLI, cache_pairs, fit_sae, model_checkpoint
from conftest import write_toy_pairs


def wait_for(predicate, process, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.02)


def stop(process, signum) -> tuple[int, str]:
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def last_error(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("sarm: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def endless_fit(tiny_cache, root) -> list[str]:
    """`sarm fit` of an SAE that would train for ever, checkpointing every step."""
    checkpoints = model_checkpoint(root / "checkpoints", every_n_train_steps=1)
    return [
        *SARM_CLI,
        *fit_sae(
            tiny_cache["cache"],
            root,
            *checkpoints,
            epochs=100000,
            data__batch_size=16,
            trainer__enable_checkpointing=None,  # Lightning's default: on
        ),
    ]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_fit_exits_with_the_signal_says_where_and_writes_no_export(tiny_cache, tmp_path, signum, status):
    process = subprocess.Popen(
        endless_fit(tiny_cache, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: (tmp_path / "checkpoints" / "last.ckpt").is_file(), process)
    code, err = stop(process, signum)
    assert code == status, err[-3000:]
    line = last_error(err)
    assert line.startswith(f"sarm: error: stopped by {signal.Signals(signum).name} at epoch ")
    assert f"resume with the same command and --ckpt_path last (checkpoints in {tmp_path / 'checkpoints'})" in line
    assert not (tmp_path / "sae").exists()  # no export, so `sarm fit … && sarm report …` cannot go on


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_cache_stops_within_a_batch_and_leaves_nothing(tiny_model_dir, tmp_path, signum, status):
    data = write_toy_pairs(tmp_path / "pairs.jsonl", n=400)
    output, building = tmp_path / "cache", tmp_path / ".cache.partial"
    process = subprocess.Popen(
        [
            *SARM_CLI,
            *cache_pairs(data, tiny_model_dir, output, batch_size=2, shard_tokens=20, accelerator="cpu"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(list(building.glob("shard-*"))) >= 2, process)
    code, err = stop(process, signum)
    assert code == status, err[-3000:]
    line = last_error(err)
    assert line.startswith(f"sarm: error: stopped by {signal.Signals(signum).name} at batch ")
    assert int(line.split(" at batch ")[1].split()[0]) < 400  # 800 sequences in batches of 2: it did not finish
    assert not output.exists() and not building.exists()  # nothing half-written is left to trust
