"""Corrupt or hand-edited model files end in one named error line, never a traceback or a NaN.

A tiny SARM (and a dense model) is exported once; each case copies the export, breaks one file the
way a truncated download or a hand edit would, and runs the real ``sarm score`` on it: exit status
2, exactly one stderr line ``sarm: error: <file>: field '<name>': ...`` naming the file (and the
field, where one is at fault), no traceback, nothing written at the output path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import write_toy_pairs
from safetensors.torch import load_file, save_file

from sarm.cli import main
from sarm.errors import SarmInputError
from sarm.explain.store import Explanation, ExplanationStore
from sarm.reward.export import save_reward_model
from sarm.reward.inference import RewardModel
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.reward.pooling import last_positions
from sarm.sae import TopKSAE, save_sae

SAE_CFG, SAE_WEIGHTS, CONFIG, HEAD = "sae/cfg.json", "sae/sae_weights.safetensors", "sarm.json", "head.safetensors"


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model_dir):
    """A SARM and a dense model on layer 2 of the tiny model (width 32), and 4 pairs to score."""
    root = tmp_path_factory.mktemp("corrupt")
    torch.manual_seed(0)
    backbone = {"model": tiny_model_dir, "layer": 2, "max_length": 48}
    sarm = SARMNetwork(TopKSAE(32, 64, 4))
    sarm.head.weight.data.normal_()
    save_reward_model(root / "sarm", sarm, backbone, reward_norm=[0.1, 2.0])
    dense = DenseNetwork(32)
    dense.head.weight.data.normal_()
    save_reward_model(root / "dense", dense, backbone)
    return {
        "sarm": root / "sarm",
        "dense": root / "dense",
        "pairs": write_toy_pairs(root / "pairs.jsonl", n=4),
        "model": tiny_model_dir,
    }


# ----------------------------------------------------------------------------- ways to break a file


def edit_json(rel: str, edit):
    """Rewrite the JSON file ``rel`` with ``edit(dict)`` applied (in place, or returning a new value)."""

    def apply(directory):
        data = json.loads((directory / rel).read_text())
        result = edit(data)
        (directory / rel).write_text(json.dumps(data if result is None else result))

    return apply


def set_field(rel: str, dotted: str, value):
    *parents, last = dotted.split(".")

    def edit(data):
        for key in parents:
            data = data[key]
        data[last] = value

    return edit_json(rel, edit)


def drop_field(rel: str, dotted: str):
    *parents, last = dotted.split(".")

    def edit(data):
        for key in parents:
            data = data[key]
        del data[last]

    return edit_json(rel, edit)


def write_bytes(rel: str, make):
    """Replace ``rel`` with ``make(old bytes)``."""

    def apply(directory):
        (directory / rel).write_bytes(make((directory / rel).read_bytes()))

    return apply


def edit_tensors(rel: str, edit):
    """Rewrite the safetensors file ``rel`` with ``edit(dict of tensors)`` applied in place."""

    def apply(directory):
        tensors = load_file(directory / rel)
        edit(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / rel))

    return apply


def set_tensor(rel: str, name: str, make):
    def edit(tensors):
        tensors[name] = make(tensors[name])

    return edit_tensors(rel, edit)


def remove(rel: str):
    def apply(directory):
        path = directory / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return apply


def with_nan(t: torch.Tensor, n: int = 3) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[:n] = float("nan")
    return t


def wider_sae(directory):
    """A complete, consistent SAE of width 48 where the backbone has 32."""
    shutil.rmtree(directory / "sae")
    save_sae(TopKSAE(48, 64, 4), directory / "sae")


def renamed_tensor(rel: str, old: str, new: str):
    def edit(tensors):
        tensors[new] = tensors.pop(old)

    return edit_tensors(rel, edit)


# (id, export, break, file named (relative to the export; "" = the export itself), field named or None)
CASES = [
    # the SAE's cfg.json
    ("sae-cfg-not-json", "sarm", write_bytes(SAE_CFG, lambda b: b[: len(b) // 2]), SAE_CFG, None),
    ("sae-cfg-not-text", "sarm", write_bytes(SAE_CFG, lambda b: b"\xff\xfe" + os.urandom(64)), SAE_CFG, None),
    ("sae-cfg-a-list", "sarm", edit_json(SAE_CFG, lambda d: [d]), SAE_CFG, None),
    ("sae-d_sae-a-string", "sarm", set_field(SAE_CFG, "d_sae", "abc"), SAE_CFG, "d_sae"),
    ("sae-d_in-a-fraction", "sarm", set_field(SAE_CFG, "d_in", 32.5), SAE_CFG, "d_in"),
    ("sae-d_in-true", "sarm", set_field(SAE_CFG, "d_in", True), SAE_CFG, "d_in"),
    ("sae-d_in-missing", "sarm", drop_field(SAE_CFG, "d_in"), SAE_CFG, "d_in"),
    ("sae-k-zero", "sarm", set_field(SAE_CFG, "k", 0), SAE_CFG, "k"),
    ("sae-k-negative", "sarm", set_field(SAE_CFG, "k", -3), SAE_CFG, "k"),
    ("sae-k-above-d_sae", "sarm", set_field(SAE_CFG, "k", 65), SAE_CFG, "k"),
    ("sae-k-a-string", "sarm", set_field(SAE_CFG, "k", "4"), SAE_CFG, "k"),
    ("sae-k-missing", "sarm", drop_field(SAE_CFG, "k"), SAE_CFG, "k"),
    ("sae-architecture-unknown", "sarm", set_field(SAE_CFG, "architecture", "gated"), SAE_CFG, "architecture"),
    ("sae-architecture-a-number", "sarm", set_field(SAE_CFG, "architecture", 7), SAE_CFG, "architecture"),
    ("sae-input_norm-unknown", "sarm", set_field(SAE_CFG, "input_norm", "layer_norm"), SAE_CFG, "input_norm"),
    (
        "sae-sarm-input_norm-unknown",
        "sarm",
        edit_json(SAE_CFG, lambda d: d["metadata"]["sarm"].update(input_norm="layer_norm")),
        SAE_CFG,
        "metadata.sarm.input_norm",
    ),
    (  # the standardization SAELens applies, edited away: the weights hold the layer_norm fold
        "sae-normalize_activations-edited",
        "sarm",
        set_field(SAE_CFG, "normalize_activations", "none"),
        SAE_CFG,
        "normalize_activations",
    ),
    (  # a BatchTopK export (SAELens's jumprelu) whose threshold is NaN
        "sae-batchtopk-threshold-nan",
        "sarm",
        lambda directory: [
            edit_json(SAE_CFG, lambda d: d.update(architecture="jumprelu"))(directory),
            edit_tensors(SAE_WEIGHTS, lambda ts: ts.update(threshold=torch.full((64,), float("nan"))))(directory),
        ],
        SAE_WEIGHTS,
        "threshold",
    ),
    ("sae-d_in-says-48", "sarm", set_field(SAE_CFG, "d_in", 48), SAE_WEIGHTS, "W_enc"),
    ("sae-cfg-missing", "sarm", remove(SAE_CFG), "sae", None),
    # the SAE's weights
    ("sae-weights-truncated", "sarm", write_bytes(SAE_WEIGHTS, lambda b: b[:-100]), SAE_WEIGHTS, None),
    ("sae-weights-random-bytes", "sarm", write_bytes(SAE_WEIGHTS, lambda b: os.urandom(len(b))), SAE_WEIGHTS, None),
    ("sae-weights-empty", "sarm", write_bytes(SAE_WEIGHTS, lambda b: b""), SAE_WEIGHTS, None),
    ("sae-weights-header-only", "sarm", write_bytes(SAE_WEIGHTS, lambda b: b[:40]), SAE_WEIGHTS, None),
    ("sae-W_enc-transposed", "sarm", set_tensor(SAE_WEIGHTS, "W_enc", lambda t: t.T), SAE_WEIGHTS, "W_enc"),
    ("sae-b_enc-extra-dim", "sarm", set_tensor(SAE_WEIGHTS, "b_enc", lambda t: t[None]), SAE_WEIGHTS, "b_enc"),
    ("sae-W_dec-missing", "sarm", edit_tensors(SAE_WEIGHTS, lambda ts: ts.pop("W_dec")), SAE_WEIGHTS, "W_dec"),
    ("sae-W_enc-nan", "sarm", set_tensor(SAE_WEIGHTS, "W_enc", with_nan), SAE_WEIGHTS, "W_enc"),
    ("sae-b_dec-inf", "sarm", set_tensor(SAE_WEIGHTS, "b_dec", lambda t: t.fill_(float("inf"))), SAE_WEIGHTS, "b_dec"),
    ("sae-W_enc-integers", "sarm", set_tensor(SAE_WEIGHTS, "W_enc", lambda t: t.long()), SAE_WEIGHTS, "W_enc"),
    (
        "sae-unknown-tensor",
        "sarm",
        edit_tensors(SAE_WEIGHTS, lambda ts: ts.update(W_gate=torch.zeros(64))),
        SAE_WEIGHTS,
        "W_gate",
    ),
    ("sae-weights-missing", "sarm", remove(SAE_WEIGHTS), "sae", None),
    ("sae-dir-missing", "sarm", remove("sae"), "sae", None),
    # sarm.json
    ("config-not-json", "sarm", write_bytes(CONFIG, lambda b: b.replace(b"{", b"{,", 1)), CONFIG, None),
    ("config-missing", "sarm", remove(CONFIG), CONFIG, None),
    ("config-kind-a-number", "sarm", set_field(CONFIG, "kind", 5), CONFIG, "kind"),
    ("config-kind-unknown", "sarm", set_field(CONFIG, "kind", "linear"), CONFIG, "kind"),
    ("config-kind-missing", "sarm", drop_field(CONFIG, "kind"), CONFIG, "kind"),
    ("config-pooling-unknown", "sarm", set_field(CONFIG, "pooling", "max"), CONFIG, "pooling"),
    ("config-pooling-missing", "sarm", drop_field(CONFIG, "pooling"), CONFIG, "pooling"),
    ("config-features-unknown", "sarm", set_field(CONFIG, "features", "decoded"), CONFIG, "features"),
    ("config-backbone-a-string", "sarm", set_field(CONFIG, "backbone", "some/model"), CONFIG, "backbone"),
    ("config-backbone-missing", "sarm", drop_field(CONFIG, "backbone"), CONFIG, "backbone"),
    ("config-layer-a-string", "sarm", set_field(CONFIG, "backbone.layer", "2"), CONFIG, "backbone.layer"),
    ("config-layer-zero", "sarm", set_field(CONFIG, "backbone.layer", 0), CONFIG, "backbone.layer"),
    ("config-layer-missing", "sarm", drop_field(CONFIG, "backbone.layer"), CONFIG, "backbone.layer"),
    ("config-model-missing", "sarm", drop_field(CONFIG, "backbone.model"), CONFIG, "backbone.model"),
    ("config-model-a-list", "sarm", set_field(CONFIG, "backbone.model", ["m"]), CONFIG, "backbone.model"),
    ("config-max_length-negative", "sarm", set_field(CONFIG, "backbone.max_length", -5), CONFIG, "backbone.max_length"),
    ("config-weights-unknown", "sarm", set_field(CONFIG, "backbone.weights", "lora"), CONFIG, "backbone.weights"),
    ("config-std-zero", "sarm", set_field(CONFIG, "reward_norm.std", 0.0), CONFIG, "reward_norm.std"),
    ("config-std-negative", "sarm", set_field(CONFIG, "reward_norm.std", -1.0), CONFIG, "reward_norm.std"),
    ("config-std-infinity", "sarm", set_field(CONFIG, "reward_norm.std", float("inf")), CONFIG, "reward_norm.std"),
    ("config-mean-nan", "sarm", set_field(CONFIG, "reward_norm.mean", float("nan")), CONFIG, "reward_norm.mean"),
    ("config-mean-a-string", "sarm", set_field(CONFIG, "reward_norm.mean", "zero"), CONFIG, "reward_norm.mean"),
    ("config-reward_norm-a-list", "sarm", set_field(CONFIG, "reward_norm", [0, 1]), CONFIG, "reward_norm"),
    ("dense-n_features-a-string", "dense", set_field(CONFIG, "n_features", "32"), CONFIG, "n_features"),
    ("dense-n_features-missing", "dense", drop_field(CONFIG, "n_features"), CONFIG, "n_features"),
    ("dense-n_features-48", "dense", set_field(CONFIG, "n_features", 48), HEAD, "weight"),
    # head.safetensors
    ("head-missing", "sarm", remove(HEAD), HEAD, None),
    ("head-truncated", "sarm", write_bytes(HEAD, lambda b: b[:-7]), HEAD, None),
    ("head-random-bytes", "sarm", write_bytes(HEAD, lambda b: os.urandom(300)), HEAD, None),
    ("head-too-short", "sarm", set_tensor(HEAD, "weight", lambda t: t[:32]), HEAD, "weight"),
    ("head-extra-dim", "sarm", set_tensor(HEAD, "weight", lambda t: t[None]), HEAD, "weight"),
    ("head-weight-renamed", "sarm", renamed_tensor(HEAD, "weight", "w"), HEAD, "weight"),
    ("head-extra-tensor", "sarm", edit_tensors(HEAD, lambda ts: ts.update(bias=torch.zeros(1))), HEAD, "bias"),
    ("head-nan", "sarm", set_tensor(HEAD, "weight", with_nan), HEAD, "weight"),
    ("dense-head-inf", "dense", set_tensor(HEAD, "weight", lambda t: t.fill_(-float("inf"))), HEAD, "weight"),
    # parts checked against the backbone, or that only a fine-tuned export has
    ("sae-wider-than-backbone", "sarm", wider_sae, "", None),
    ("merged-backbone-missing", "sarm", set_field(CONFIG, "backbone.weights", "merged"), "backbone", None),
    ("adapter-missing", "sarm", set_field(CONFIG, "backbone.weights", "adapter"), "adapter/adapter_config.json", None),
]


def run_score(model, pairs, output) -> int:
    """Exit status of ``sarm score`` run in-process (its stderr is left to ``capsys``)."""
    try:
        main(["score", "--model", str(model), "--data", str(pairs), "--output", str(output)])
    except SystemExit as exit_:
        return exit_.code
    return 0


def assert_one_named_error(err: str, path, field: str | None) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sarm: error: {path}"), lines[0]
    if field is not None:
        assert f"field '{field}'" in lines[0], lines[0]
    assert "Traceback" not in err


def test_the_unbroken_exports_score(exports, tmp_path, capsys):
    for kind in ("sarm", "dense"):
        assert run_score(exports[kind], exports["pairs"], tmp_path / f"{kind}.jsonl") == 0
        lines = (tmp_path / f"{kind}.jsonl").read_text().splitlines()
        rows = [json.loads(line, parse_constant=_refuse) for line in lines]
        assert len(rows) == 4 and all(isinstance(r["margin"], float) for r in rows)
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("name, kind, breaks, named, field", CASES, ids=[c[0] for c in CASES])
def test_a_broken_file_is_one_named_error(exports, tmp_path, capsys, name, kind, breaks, named, field):
    model = tmp_path / "rm"
    shutil.copytree(exports[kind], model)
    breaks(model)
    code = run_score(model, exports["pairs"], tmp_path / "scores.jsonl")
    err = capsys.readouterr().err
    assert code == 2, err
    assert_one_named_error(err, model / named if named else model, field)
    assert not (tmp_path / "scores.jsonl").exists()


def test_the_command_line_prints_the_error_without_a_traceback(exports, tmp_path):
    """The installed entry point, in its own process: the same one line, exit status 2."""
    model = tmp_path / "rm"
    shutil.copytree(exports["sarm"], model)
    set_tensor(SAE_WEIGHTS, "W_dec", with_nan)(model)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sarm.cli",
            "score",
            "--model",
            str(model),
            "--data",
            str(exports["pairs"]),
            "--output",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert_one_named_error(result.stderr, model / SAE_WEIGHTS, "W_dec")
    assert "holds 3 non-finite values" in result.stderr


# ----------------------------------------------------------------------------- NaN weights, non-finite rewards


def _refuse(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def test_nan_head_weights_are_refused_before_anything_is_written(exports, tmp_path, capsys):
    model = tmp_path / "rm"
    shutil.copytree(exports["sarm"], model)
    set_tensor(HEAD, "weight", lambda t: with_nan(t, 1))(model)
    output = tmp_path / "scores.jsonl"
    assert run_score(model, exports["pairs"], output) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"sarm: error: {model / HEAD}: field 'weight': holds 1 non-finite value (NaN or inf)")
    assert not output.exists()


def test_rewards_that_overflow_are_written_as_null_and_counted(exports, tmp_path, capsys):
    """Finite weights can still overflow float32: latent 0 reads the direction that splits the scored
    responses' (standardized, last-token) hidden states, ×1e30, and the head weighs it 1e20. Responses on
    its positive side score +inf, the others finitely. Those rewards, and their pairs' margins and
    winners, are written as null; the output stays strict JSON and stderr counts them."""
    pairs = [json.loads(line) for line in exports["pairs"].read_text().splitlines()]
    prompts = [[{"role": "user", "content": p["prompt"]}] for p in pairs]
    chosen, rejected = [p["chosen"] for p in pairs], [p["rejected"] for p in pairs]
    reference = RewardModel.load(exports["sarm"])
    hidden, mask = reference.hidden_states(prompts * 2, chosen + rejected)
    last = reference.network.sae.preprocess(hidden[torch.arange(len(mask)), last_positions(mask)]).double()
    center = last.mean(0)
    direction = last[0] - center  # response 0 lies on its positive side; their mean, at 0: some lie on the other

    model = tmp_path / "rm"
    shutil.copytree(exports["sarm"], model)
    set_tensor(SAE_WEIGHTS, "W_enc", lambda t: torch.cat([1e30 * direction[:, None].float(), t[:, 1:]], 1))(model)
    set_tensor(SAE_WEIGHTS, "b_enc", lambda t: torch.cat([(-1e30 * center @ direction).float()[None], t[1:]]))(model)
    set_tensor(HEAD, "weight", lambda t: torch.cat([torch.tensor([1e20]), t[1:]]))(model)
    broken = RewardModel.load(model)
    expected = list(
        zip(broken.score(prompts, chosen).rewards.tolist(), broken.score(prompts, rejected).rewards.tolist())
    )
    n_inf = sum(r == float("inf") for pair in expected for r in pair)
    assert 0 < n_inf < 2 * len(pairs) and all(r == float("inf") or abs(r) < 1e6 for pair in expected for r in pair)

    output = tmp_path / "scores.jsonl"
    assert run_score(model, exports["pairs"], output) == 0
    rows = [json.loads(line, parse_constant=_refuse) for line in output.read_text().splitlines()]
    for row, (c, r) in zip(rows, expected, strict=True):
        assert row["chosen_reward"] == (None if c == float("inf") else pytest.approx(c, abs=1e-4))
        assert row["rejected_reward"] == (None if r == float("inf") else pytest.approx(r, abs=1e-4))
        both_finite = c != float("inf") and r != float("inf")
        assert row["margin"] == (pytest.approx(c - r, abs=1e-4) if both_finite else None)
        assert row["chosen_wins"] == ((c > r) if both_finite else None)
    assert f"sarm: {n_inf} of {2 * len(pairs)} rewards were not finite (written as null)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- explanation stores


STORE_CASES = [
    ("not-json", lambda d: "{", None),
    ("a-list", lambda d: [], None),
    ("version-a-string", lambda d: {**d, "version": "1"}, "version"),
    ("version-from-the-future", lambda d: {**d, "version": 2}, "version"),
    ("explanations-a-list", lambda d: {**d, "explanations": []}, "explanations"),
    ("feature-not-a-number", lambda d: {**d, "explanations": {"k": {"x": {}}}}, "explanations.k.x"),
    ("entry-text-a-number", lambda d: _entry(d, text=5), "explanations.k.3.offline.text"),
    ("entry-method-missing", lambda d: _entry(d, method=None), "explanations.k.3.offline.method"),
    ("entry-evidence-a-string", lambda d: _entry(d, evidence="x"), "explanations.k.3.offline.evidence"),
    ("entry-detection-above-one", lambda d: _entry(d, detection=1.5), "explanations.k.3.offline.detection"),
    ("entry-detection-nan", lambda d: _entry(d, detection=float("nan")), "explanations.k.3.offline.detection"),
]


def _entry(data: dict, **changes) -> dict:
    entry = data["explanations"]["k"]["3"]["offline"]
    for key, value in changes.items():
        entry.pop(key) if value is None else entry.__setitem__(key, value)
    return data


@pytest.mark.parametrize("name, breaks, field", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_a_broken_explanation_store_is_one_named_error(tmp_path, name, breaks, field):
    path = tmp_path / "store.json"
    ExplanationStore(path).put("k", 3, Explanation("fires on x", "offline", [{"ngram": "x"}], 0.75))
    broken = breaks(json.loads(path.read_text()))
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(SarmInputError) as error:
        ExplanationStore(path).get("k", 3, "offline")
    assert_one_named_error(f"sarm: error: {error.value}", path, field)
