"""Reward models that run the backbone: LoRA and joint modes, padding, export, test and score."""

import json

import lightning as L
import pytest
import torch
from commands import cache_pairs
from conftest import write_toy_pairs

from sarm.cache import PairActivationDataModule
from sarm.cli import main
from sarm.data.pairs import PairTextDataModule
from sarm.reward import SARM, DenseRM
from sarm.reward.inference import RewardModel
from sarm.reward.loss import bradley_terry_loss
from sarm.sae import TopKSAE, save_sae


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("modes")
    data = write_toy_pairs(root / "pairs.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["subset"] = "even" if i % 2 == 0 else "odd"
        row["id"] = f"pair-{i}"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    sae = save_sae(TopKSAE(32, 64, 4), root / "sae", extra={"model_name": tiny_model_dir, "hook_layer": 2})
    return {"root": root, "data": str(data), "sae": str(sae), "model": tiny_model_dir}


def text_data(setup, **kwargs) -> PairTextDataModule:
    args = dict(
        data=setup["data"],
        model=setup["model"],
        layer=2,
        max_length=48,
        split_fractions=(0.5, 0.25, 0.25),
        batch_size=8,
    )
    return PairTextDataModule(**(args | kwargs))


def test_lora_mode_trains_adapters_of_the_last_layers_and_the_head_and_exports_them(setup):
    model = SARM(
        sae=setup["sae"], mode="lora", lora_layers=1, lr=0.05, backbone_lr=1e-3, export_dir=str(setup["root"] / "lora")
    )
    data = text_data(setup)
    trainer(max_epochs=2).fit(model, data)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "network.head.weight" in trainable and all("lora_" in n for n in trainable if n != "network.head.weight")
    assert trainable and all(".layers.1." in n for n in trainable if "lora_" in n)  # layer 2 of 2 kept
    assert not any(p.requires_grad for p in model.sae.parameters())
    assert (setup["root"] / "lora" / "adapter" / "adapter_config.json").is_file()

    # The export, loaded without Lightning, gives the trained module's rewards.
    model.eval()
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        expected = model.score(batch)
    loaded = RewardModel.load(setup["root"] / "lora")
    pairs = [data.pairs[i] for i in batch["pair"].tolist()]
    chosen = loaded.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    torch.testing.assert_close(chosen.rewards, expected["chosen_reward"], atol=1e-4, rtol=1e-4)
    assert json.loads((setup["root"] / "lora" / "sarm.json").read_text())["backbone"]["weights"] == "adapter"


def test_merged_lora_export_scores_like_the_separate_adapters(setup):
    model = DenseRM(
        mode="lora",
        lora_layers=1,
        lr=0.05,
        backbone_lr=1e-2,
        merge_lora=False,
        export_dir=str(setup["root"] / "dense-adapter"),
    )
    trainer(max_epochs=1).fit(model, text_data(setup))
    model.hparams.merge_lora, model.hparams.export_dir = True, str(setup["root"] / "dense-merged")
    model.on_train_end()
    pairs = text_data(setup).pairs[:6]
    args = ([p.prompt for p in pairs], [p.chosen for p in pairs])
    separate = RewardModel.load(setup["root"] / "dense-adapter").score(*args).rewards
    merged = RewardModel.load(setup["root"] / "dense-merged").score(*args).rewards
    assert separate.abs().sum() > 0
    torch.testing.assert_close(merged, separate, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_rewards_do_not_depend_on_the_padding_side(setup, pooling):
    model = SARM(sae=setup["sae"], pooling=pooling)
    model.head.weight.data.normal_(generator=torch.Generator().manual_seed(1))
    rewards = {}
    for side in ("right", "left"):
        data = text_data(setup, padding_side=side)
        t = trainer()
        t.predict(model, data, return_predictions=False)  # runs setup: loads the backbone
        batch = next(iter(data.test_dataloader()))
        with torch.no_grad():
            rewards[side] = model.score(batch)["chosen_reward"]
    assert rewards["right"].abs().sum() > 0
    torch.testing.assert_close(rewards["left"], rewards["right"], atol=1e-4, rtol=1e-4)


def test_cached_and_text_batches_give_the_same_head_only_rewards(setup):
    cache = setup["root"] / "cache32"
    main(cache_pairs(setup["data"], setup["model"], cache, split_fractions=[0.5, 0.25, 0.25], dtype="float32"))
    for pooling in ("last", "mean"):
        model = SARM(sae=setup["sae"], pooling=pooling)
        model.head.weight.data.normal_(generator=torch.Generator().manual_seed(2))
        out = {}
        for name, data in (
            ("cache", PairActivationDataModule(str(cache), batch_size=100, pooling=pooling)),
            ("text", text_data(setup, batch_size=100)),
        ):
            predictions = trainer().predict(model, data)
            out[name] = {
                int(p): float(r) for batch in predictions for p, r in zip(batch["pair"], batch["chosen_reward"])
            }
        assert out["cache"].keys() == out["text"].keys()
        torch.testing.assert_close(
            torch.tensor(list(out["cache"].values())),
            torch.tensor([out["text"][k] for k in out["cache"]]),
            atol=1e-4,
            rtol=1e-4,
        )


def test_test_reports_per_subset_accuracy_and_swapping_sides_turns_a_into_one_minus_a(setup):
    model = SARM(sae=setup["sae"], lr=0.05)
    trainer(max_epochs=3).fit(model, text_data(setup))
    result = trainer().test(model, text_data(setup), verbose=False)[0]
    assert {"test/accuracy", "test/subset/even", "test/subset/odd", "test/subset/subset_mean"} <= result.keys()

    swapped = setup["root"] / "swapped.jsonl"
    rows = [json.loads(line) for line in open(setup["data"])]
    swapped.write_text("".join(json.dumps(r | {"chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows))
    flipped = trainer().test(model, text_data(setup, data=str(swapped)), verbose=False)[0]
    assert flipped["test/accuracy"] == pytest.approx(1 - result["test/accuracy"])
    assert flipped["test/subset/even"] == pytest.approx(1 - result["test/subset/even"])


def test_score_writes_rewards_and_top_features_for_pairs_and_for_responses(setup, tmp_path, capsys):
    model = SARM(sae=setup["sae"], export_dir=str(tmp_path / "rm"))
    trainer(max_epochs=2).fit(model, text_data(setup))
    main(
        [
            "score",
            "--model",
            str(tmp_path / "rm"),
            "--data",
            setup["data"],
            "--output",
            str(tmp_path / "pairs.jsonl"),
            "--normalize",
            "true",
            "--top_features",
            "64",
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and rows[0]["id"] == "pair-0" and rows[5]["subset"] == "odd"
    first = rows[0]
    assert first["margin"] == pytest.approx(first["chosen_reward"] - first["rejected_reward"])
    assert 0 < len(first["top_features"]) <= 8  # at most k = 4 latents active on each side
    # Every non-zero contribution is listed, largest first: together they are the margin.
    assert sum(f["contribution"] for f in first["top_features"]) == pytest.approx(first["margin"], abs=1e-4)
    magnitudes = [abs(f["contribution"]) for f in first["top_features"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert "chosen_reward_normalized" in first

    responses = tmp_path / "responses.jsonl"
    responses.write_text(
        json.dumps({"prompt": "question 0 about the fox", "response": "happy to help with that"})
        + "\n"
        + json.dumps({"response": "go away", "id": "r2"})
        + "\n"
    )
    main(["score", "--model", str(tmp_path / "rm"), "--data", str(responses), "--output", str(tmp_path / "r.jsonl")])
    scored = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    expected = (
        RewardModel.load(tmp_path / "rm")
        .score([[{"role": "user", "content": "question 0 about the fox"}], []], ["happy to help with that", "go away"])
        .rewards
    )
    assert [r["reward"] for r in scored] == pytest.approx(expected.tolist(), abs=1e-5)
    assert scored[1]["id"] == "r2"

    responses.write_text(json.dumps({"prompt": "hi", "response": "ok"}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "score",
                "--model",
                str(tmp_path / "rm"),
                "--data",
                str(responses),
                "--output",
                str(tmp_path / "bad.jsonl"),
            ]
        )
    assert exit_info.value.code == 2
    assert f"{responses}:2: field 'response': missing" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()


def test_gradient_checkpointing_gives_the_same_lora_gradients(setup):
    grads = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SARM(sae=setup["sae"], mode="lora", lora_layers=1, gradient_checkpointing=checkpointing)
        model.head.weight.data.normal_(generator=torch.Generator().manual_seed(3))
        data = text_data(setup)
        trainer().predict(model, data, return_predictions=False)  # setup: backbone + adapters
        for name, p in model.named_parameters():  # LoRA B starts at zero: give it a value so A gets gradient
            if "lora_B" in name:
                p.data.normal_(generator=torch.Generator().manual_seed(4))
        model.train()
        scored = model.score(next(iter(data.val_dataloader())))
        bradley_terry_loss(scored["chosen_reward"], scored["rejected_reward"]).backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and any("lora_A" in n for n in grads[True])
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], atol=1e-5, rtol=1e-4)


def test_predict_runs_through_the_cli_with_the_attribution_callback(setup, tmp_path):
    main(
        [
            "predict",
            "--model",
            "sarm.reward.SARM",
            "--model.sae",
            setup["sae"],
            "--model.pooling",
            "mean",
            "--data",
            "sarm.data.pairs.PairTextDataModule",
            "--data.data",
            setup["data"],
            "--data.model",
            setup["model"],
            "--data.layer",
            "2",
            "--data.max_length",
            "48",
            "--data.split_fractions",
            "[0.5, 0.25, 0.25]",
            "--trainer.callbacks+=sarm.attribution.RewardAttribution",
            f"--trainer.callbacks.output_dir={tmp_path / 'attribution'}",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    summary = json.loads((tmp_path / "attribution" / "summary.json").read_text())
    assert summary["pairs"] == 12  # the test split of 48 pairs at 50/25/25


def test_an_sae_of_another_width_than_the_data_is_refused_before_training(setup, tmp_path, tiny_cache):
    from sarm.errors import SarmInputError

    wide = save_sae(TopKSAE(48, 64, 4), tmp_path / "wide", extra={"model_name": setup["model"], "hook_layer": 2})
    with pytest.raises(SarmInputError, match="width 48, the data's backbone .* has 32"):
        trainer(max_epochs=1).fit(SARM(sae=str(wide)), PairActivationDataModule(str(tiny_cache["cache"])))
    other_layer = save_sae(TopKSAE(32, 64, 4), tmp_path / "l3", extra={"model_name": setup["model"], "hook_layer": 3})
    with pytest.raises(SarmInputError, match="trained on layer 3"):
        trainer(max_epochs=1).fit(SARM(sae=str(other_layer)), PairActivationDataModule(str(tiny_cache["cache"])))
