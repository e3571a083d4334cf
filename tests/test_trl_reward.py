"""scripts/trl_reward.py: TRL's RewardTrainer on the tiny random model, LoRA on the last layer only."""

from __future__ import annotations

import sys
from pathlib import Path

from sarm.data.preference import load_preferences
from sarm.data.splits import split_by_prompt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from trl_reward import train_trl_reward_model


def test_trl_reward_model_trains_lora_on_last_layer_and_head(tiny_model_dir, tmp_path):
    splits = split_by_prompt(load_preferences("builtin:planted", num_pairs=24), (0.5, 0.25, 0.25))
    result = train_trl_reward_model(
        tiny_model_dir,
        3,
        splits["train"],
        splits["val"],
        splits["test"],
        max_length=48,
        batch_size=4,
        lora_r=4,
        lora_last_layers=1,
        output_dir=tmp_path / "trl",
        seed=0,
    )

    assert result["test_pairs"] == len(splits["test"]) > 0
    # Accuracy is a count of test pairs won, not an average of per-batch means (batches of 4 leave a ragged one).
    won = result["test_accuracy"] * result["test_pairs"]
    assert abs(won - round(won)) < 1e-6
    assert result["train_seconds"] > 0 and result["tokens_per_second"] > 0
    # Only the LoRA adapters of the last kept layer (index 2 of 0..2) and the score head train.
    names = result["trainable_parameters"]
    assert any(".score." in name for name in names)
    lora = [name for name in names if ".score." not in name]
    assert lora and all("lora_" in name and ".layers.2." in name for name in lora)
    assert (tmp_path / "trl" / "result.json").is_file()
