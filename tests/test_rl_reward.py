"""``SARMRewardFunction`` inside TRL's GRPOTrainer: a few GRPO steps of a tiny random policy against a tiny SARM.

Specifications: the trainer accepts the function (plain-text and conversational prompts); every reward the trainer
recorded for a completion, and the per-step mean it logged, equal ``RewardModel.score`` of the same prompt and
completion from a separately loaded model; the per-feature shares it logged equal ``reward_shares`` of the RM's own
feature terms on that step's completions; a completion that cannot be read is refused with a named error.
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_sarm_export

from sarm.attribution.shares import reward_shares
from sarm.errors import SarmInputError
from sarm.reward.inference import RewardModel
from sarm.rl.reward_function import SHARE_PREFIX, SARMRewardFunction
from sarm.rl.samples import prompt_and_response

PROMPTS = ["what is the capital of france", "please write a python function", "thank you for the answer"]


@pytest.fixture(scope="module")
def sarm_export(tmp_path_factory, tiny_model_dir):
    """A tiny SARM (mean pooling) on the tiny backbone's layer 2, random head."""
    return random_sarm_export(
        tmp_path_factory.mktemp("rl-sarm") / "sarm", tiny_model_dir, seed=0, max_length=64, reward_norm=[0.5, 2.0]
    )


class Recorder:
    """A callback that copies, at each log, the completions of the step the trainer just logged: TRL keeps the last
    generation batch's prompts, completions and per-function rewards in ``trainer._logs`` (its completions table)."""

    def __init__(self):
        self.trainer, self.steps = None, []

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class OnLog(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "rewards/sarm/mean" in logs:
                    table = recorder.trainer._logs
                    recorder.steps.append(
                        {
                            "logs": dict(logs),
                            "prompts": list(table["prompt"]),
                            "completions": list(table["completion"]),
                            "rewards": list(table["rewards"]["sarm"]),
                        }
                    )

        return OnLog()


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_grpo_logs_the_reward_models_own_scores_and_feature_shares(
    tiny_model_dir, sarm_export, tmp_path, conversational
):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    prompts = [[{"role": "user", "content": p}] for p in PROMPTS] if conversational else PROMPTS
    reward = SARMRewardFunction(sarm_export, log_features=3, watch=[5])
    recorder = Recorder()
    torch.manual_seed(0)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        reward_funcs=reward,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        args=GRPOConfig(
            output_dir=str(tmp_path / "grpo"),
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=8,
            max_steps=2,
            logging_steps=1,
            learning_rate=1e-3,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            seed=0,
        ),
        callbacks=[recorder.callback()],
    )
    recorder.trainer = trainer
    trainer.train()

    assert len(recorder.steps) == 2
    rm = RewardModel.load(sarm_export)  # a model of its own: the trainer's rewards must be the export's scores
    for step in recorder.steps:
        assert len(step["completions"]) == 2
        if conversational:
            assert all(isinstance(c, list) and c[-1]["role"] == "assistant" for c in step["completions"])
        samples = [prompt_and_response(p, c) for p, c in zip(step["prompts"], step["completions"])]
        scores = rm.score([p for p, _ in samples], [r for _, r in samples])
        torch.testing.assert_close(torch.tensor(step["rewards"]), scores.rewards, rtol=0, atol=1e-5)
        assert step["logs"]["rewards/sarm/mean"] == pytest.approx(float(scores.rewards.mean()), abs=1e-5)

        shares = reward_shares(rm.feature_head.contributions(scores.features))
        logged = {int(k[len(SHARE_PREFIX) + 1 :]): v for k, v in step["logs"].items() if k.startswith(SHARE_PREFIX)}
        expected = set(shares.abs().topk(3).indices.tolist()) | {5}
        assert set(logged) == expected
        for feature, value in logged.items():
            assert value == pytest.approx(float(shares[feature]), abs=1e-6)
    assert reward.completions_scored == 4


def test_plain_and_conversational_samples_score_alike(sarm_export):
    """The same prompt and reply, as plain text or as TRL's conversational lists, get one reward."""
    reward = SARMRewardFunction(sarm_export)
    plain = reward(prompts=PROMPTS[:2], completions=["paris", "def add(a, b): return a + b"])
    chat = reward(
        prompts=[[{"role": "user", "content": p}] for p in PROMPTS[:2]],
        completions=[[{"role": "assistant", "content": c}] for c in ["paris", "def add(a, b): return a + b"]],
    )
    assert plain == pytest.approx(chat, abs=1e-6)
    normalized = SARMRewardFunction(reward.model, normalize=True)(prompts=PROMPTS[:2], completions=["paris", "x"])
    assert normalized == pytest.approx(
        reward.model.normalize(torch.tensor(reward(PROMPTS[:2], ["paris", "x"]))).tolist()
    )


def test_unreadable_completion_is_named(sarm_export):
    reward = SARMRewardFunction(sarm_export)
    with pytest.raises(SarmInputError, match=r"completion 1: field 'completion': .*'user', expected 'assistant'"):
        reward(prompts=PROMPTS[:2], completions=["fine", [{"role": "user", "content": "not a reply"}]])
    with pytest.raises(SarmInputError, match=r"watch: features \[64\] out of range"):
        SARMRewardFunction(reward.model, watch=[64])
