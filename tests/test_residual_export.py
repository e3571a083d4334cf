"""The residualized SARM as an exported reward model: export → load, ``sarm score`` rows, corrupt files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import write_toy_pairs
from safetensors.torch import load_file, save_file

from sarm.cli import main
from sarm.reward.export import CONFIG, RESIDUAL, load_network, save_reward_model
from sarm.reward.inference import RewardModel
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.reward.residual import ResidualSARMNetwork, feature_share
from sarm.sae import TopKSAE


def residual_network(pooling: str = "last") -> ResidualSARMNetwork:
    """A residualized SARM reading width 32 (layer 2 of the tiny model), 64 features, random w and a small v."""
    torch.manual_seed(0)
    network = ResidualSARMNetwork(SARMNetwork(TopKSAE(32, 64, 4), pooling), DenseNetwork(32, pooling))
    with torch.no_grad():
        network.sarm.head.weight.normal_()
        network.residual.head.weight.normal_().mul_(0.3)
    return network


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("residual-export")
    backbone = {"model": tiny_model_dir, "layer": 2, "max_length": 48}
    network = residual_network()
    save_reward_model(root / "rm", network, backbone, feature_share=0.875, metrics={"val_share": 0.875})
    return {"model": root / "rm", "network": network, "pairs": write_toy_pairs(root / "pairs.jsonl", n=4)}


def run_score(model, data, output) -> int:
    try:
        main(["score", "--model", str(model), "--data", str(data), "--output", str(output)])
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_export_then_load_is_the_same_network(tmp_path, pooling):
    network = residual_network(pooling)
    save_reward_model(tmp_path, network, {"model": "m", "layer": 2}, feature_share=0.5)
    assert {p.name for p in tmp_path.iterdir()} >= {CONFIG, "head.safetensors", RESIDUAL, "sae"}
    loaded, config = load_network(tmp_path)
    assert isinstance(loaded, ResidualSARMNetwork)
    assert config["kind"] == "residual_sarm" and config["pooling"] == pooling
    assert config["feature_share"] == 0.5 and config["residual_size"] == 32 and config["n_features"] == 64
    assert config["sae_dir"] == "sae" and config["residual"]["standardize"] == "per_token"
    hidden, mask = torch.randn(5, 7, 32), torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        for mine, theirs in zip(network.decompose(hidden, mask), loaded.decompose(hidden, mask)):
            assert torch.equal(mine, theirs)
        assert torch.equal(network(hidden, mask), loaded(hidden, mask))


def test_score_writes_feature_share_and_equals_the_network_applied_directly(export, tmp_path):
    output = tmp_path / "scores.jsonl"
    assert run_score(export["model"], export["pairs"], output) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 4
    # offline: the same backbone's hidden states, through ResidualSARMNetwork itself
    model = RewardModel.load(export["model"])
    pairs = [json.loads(line) for line in export["pairs"].read_text().splitlines()]
    prompts = [[{"role": "user", "content": p["prompt"]}] for p in pairs]
    with torch.no_grad():
        c_hidden, c_mask = model.hidden_states(prompts, [p["chosen"] for p in pairs])
        r_hidden, r_mask = model.hidden_states(prompts, [p["rejected"] for p in pairs])
        chosen, rejected = export["network"](c_hidden, c_mask), export["network"](r_hidden, r_mask)
        _, c_res = export["network"].decompose(c_hidden, c_mask)
        _, r_res = export["network"].decompose(r_hidden, r_mask)
    for i, row in enumerate(rows):
        assert row["chosen_reward"] == pytest.approx(float(chosen[i]), abs=1e-5)
        assert row["rejected_reward"] == pytest.approx(float(rejected[i]), abs=1e-5)
        b = float(c_res[i] - r_res[i])
        assert row["residual"] == pytest.approx(b, abs=1e-5)
        a = row["margin"] - b  # the features' part of the margin
        assert row["feature_share"] == pytest.approx(abs(a) / (abs(a) + abs(b)), abs=1e-4)
        assert 0.0 <= row["feature_share"] <= 1.0
        # the top features are feature terms; with the residual they account for the margin when all are listed
        assert all(isinstance(f["feature"], int) for f in row["top_features"])
    # the row's share is the module's definition on that one pair
    a = torch.tensor([rows[0]["margin"] - rows[0]["residual"]])
    assert rows[0]["feature_share"] == pytest.approx(feature_share(a, torch.tensor([rows[0]["residual"]])), abs=1e-6)


def test_score_of_single_responses_carries_the_residual_term(export, tmp_path):
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q {i}", "response": f"answer {i}"}) + "\n" for i in range(3)))
    output = tmp_path / "r.jsonl"
    assert run_score(export["model"], data, output) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    model = RewardModel.load(export["model"])
    scores = model.score([[{"role": "user", "content": f"q {i}"}] for i in range(3)], [f"answer {i}" for i in range(3)])
    for i, row in enumerate(rows):
        assert row["residual"] == pytest.approx(float(scores.residual[i]), abs=1e-6)
        a, b = row["reward"] - row["residual"], row["residual"]
        assert row["feature_share"] == pytest.approx(abs(a) / (abs(a) + abs(b)), abs=1e-4)


def _set_residual(make):
    def apply(directory):
        tensors = load_file(str(directory / RESIDUAL))
        tensors["weight"] = make(tensors["weight"])
        save_file(tensors, str(directory / RESIDUAL))

    return apply


def _set_config(name, value):
    def apply(directory):
        config = json.loads((directory / CONFIG).read_text())
        config[name] = value
        (directory / CONFIG).write_text(json.dumps(config))

    return apply


def _nan(t):
    t = t.clone()
    t[0] = float("nan")
    return t


CASES = [
    ("residual-missing", lambda d: (d / RESIDUAL).unlink(), RESIDUAL, None),
    ("residual-truncated", lambda d: (d / RESIDUAL).write_bytes((d / RESIDUAL).read_bytes()[:20]), RESIDUAL, None),
    ("residual-nan", _set_residual(_nan), RESIDUAL, "weight"),
    ("residual-wrong-width", _set_residual(lambda t: t[:16].clone()), RESIDUAL, "weight"),
    ("residual-size-wrong", _set_config("residual_size", 16), CONFIG, "residual_size"),
    ("feature-share-out-of-range", _set_config("feature_share", 1.5), CONFIG, "feature_share"),
    ("sae-missing", lambda d: shutil.rmtree(d / "sae"), "sae", None),
]


@pytest.mark.parametrize("name, breaks, named, field", CASES, ids=[c[0] for c in CASES])
def test_a_broken_residual_export_is_one_named_error(export, tmp_path, capsys, name, breaks, named, field):
    model = tmp_path / "rm"
    shutil.copytree(export["model"], model)
    breaks(model)
    code = run_score(model, export["pairs"], tmp_path / "scores.jsonl")
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sarm: error: {model / named}"), err
    if field is not None:
        assert f"field '{field}'" in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "scores.jsonl").exists()
