"""``sarm serve``: started for real in its own process group on a free loopback port, called over HTTP.

Specifications: each endpoint answers in its protocol with the rewards offline scoring gives (``RewardModel``,
``sarm score``); batching does not move a reward; every bad request gets its status and a message naming the field,
and the server answers a good request right after; a batch that crashes fails its requests only; a bounded load run
ends by itself with no errors and every reward equal; stopping the server leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import write_toy_pairs

from sarm.cli import main
from sarm.reward.export import save_reward_model
from sarm.reward.inference import RewardModel
from sarm.reward.network import DenseNetwork, SARMNetwork
from sarm.reward.residual import ResidualSARMNetwork
from sarm.sae import TopKSAE
from sarm.serve.requests import Limits, read_openrlhf, read_sarm
from sarm.serve.scoring import score_payloads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from load_test import load_test  # noqa: E402

SARM_BIN = Path(sys.executable).with_name("sarm")
LIMITS = ["--max_texts", "4", "--max_chars", "200", "--max_body_bytes", "4096"]
START_SECONDS = 120  # the longest a server may take to load the tiny model and answer /health


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model_dir):
    """A SARM (mean pooling, stored reward normalization), a residualized SARM and a dense reward model."""
    root = tmp_path_factory.mktemp("serve-exports")
    backbone = {"model": tiny_model_dir, "layer": 2, "max_length": 48}
    torch.manual_seed(0)
    sarm = SARMNetwork(TopKSAE(32, 64, 4), "mean")
    residual = ResidualSARMNetwork(SARMNetwork(TopKSAE(32, 64, 4), "last"), DenseNetwork(32, "last"))
    dense = DenseNetwork(32, "last")
    with torch.no_grad():
        for head in (sarm.head, residual.sarm.head, residual.residual.head, dense.head):
            head.weight.normal_()
    save_reward_model(root / "sarm", sarm, backbone, reward_norm=[0.5, 2.0])
    save_reward_model(root / "residual", residual, backbone, feature_share=0.8)
    save_reward_model(root / "dense", dense, backbone)
    return {name: root / name for name in ("sarm", "residual", "dense")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """A server in its own process group, once /health answers (or a failure with its stderr)."""
    port = free_port()
    log = cwd / f"server-{port}.log"  # a file, not a pipe nobody reads while the server runs (it would block it)
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*map(str, command), "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if get(f"{url}/health") == (200, "ok"):
                    return process, url
            except OSError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the server did not answer /health within {START_SECONDS} s")
    except BaseException:
        stop(process)  # whatever went wrong, no server is left behind
        raise


def stop(process: subprocess.Popen) -> None:
    """Stop the whole process group (LitServe's API server and inference workers with it) and check none is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return  # the group is empty
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("processes of the server's group were still running 30 s after it was stopped")


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    process, url = start(
        [SARM_BIN, "serve", "--model", exports["sarm"], "--max_batch_size", "4", "--max_batch_delay", "0.05", *LIMITS],
        tmp_path_factory.mktemp("serve-cwd"),
    )
    try:
        yield url
    finally:
        stop(process)


def get(url: str) -> tuple[int, object]:
    """Status and body: JSON, or the text of a plain-text answer (/health's ``ok``)."""
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read().decode()
        return answer.status, json.loads(body) if answer.headers.get_content_type() == "application/json" else body


def post(url: str, body, content_type: str = "application/json") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def offline(model_dir, prompts: list[str], responses: list[str]):
    model = RewardModel.load(model_dir)
    return model, model.score([[{"role": "user", "content": p}] for p in prompts], responses)


PROMPTS = ["what is the capital of france", "hello how are you"]
RESPONSES = [" paris is the capital", " I am fine thank you today"]


def test_get_reward_answers_openrlhf_with_the_offline_rewards(server, exports):
    body = {"query": [p + r for p, r in zip(PROMPTS, RESPONSES)], "prompts": PROMPTS, "labels": [None, None]}
    status, answer = post(f"{server}/get_reward", body)
    assert status == 200
    assert set(answer) == {"rewards", "scores", "extra_logs"}
    _, scores = offline(exports["sarm"], PROMPTS, [r.lstrip() for r in RESPONSES])  # the space only separates
    assert answer["rewards"] == pytest.approx(scores.rewards.tolist(), abs=1e-5)
    assert answer["scores"] == answer["rewards"]


def test_the_separator_after_the_prompt_is_not_part_of_the_response(server):
    bodies = [{"query": [PROMPTS[0] + gap + "paris"], "prompts": [PROMPTS[0]]} for gap in ("", " ", "\n\n")]
    rewards = [post(f"{server}/get_reward", body)[1]["rewards"] for body in bodies]
    assert rewards[0] == rewards[1] == rewards[2]


def test_a_query_ending_in_eos_or_padding_scores_as_its_response(server):
    """The template writes the end of the turn itself: a trainer's decoded eos/pad tokens are not response text."""
    plain = {"query": [PROMPTS[0] + RESPONSES[0]], "prompts": [PROMPTS[0]]}
    decoded = {"query": [PROMPTS[0] + RESPONSES[0] + "<|im_end|><|endoftext|><|endoftext|>"], "prompts": [PROMPTS[0]]}
    assert post(f"{server}/get_reward", decoded)[1]["rewards"] == post(f"{server}/get_reward", plain)[1]["rewards"]


def test_score_gives_what_sarm_score_writes(server, exports, tmp_path):
    """Rewards, normalized rewards and top features as ``sarm score --normalize true`` writes them for the same rows;
    conversational and plain prompts alike."""
    rows = [
        {"prompt": PROMPTS[0], "response": RESPONSES[0]},
        {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user",
                    "content": PROMPTS[1]}], "response": RESPONSES[1]},
        {"prompt": None, "response": "the quick brown fox"},
    ]  # fmt: skip
    data, output = tmp_path / "rows.jsonl", tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    main(["score", "--model", str(exports["sarm"]), "--data", str(data), "--output", str(output)]
         + ["--normalize", "true", "--top_features", "3"])  # fmt: skip
    written = [json.loads(line) for line in output.read_text().splitlines()]

    status, answer = post(f"{server}/score", {"items": rows, "top_features": 3, "normalize": True})
    assert status == 200
    assert answer["rewards"] == pytest.approx([w["reward"] for w in written], abs=1e-5)
    for served, row in zip(answer["results"], written):
        assert served["reward_normalized"] == pytest.approx(row["reward_normalized"], abs=1e-5)
        assert served["reward_normalized"] == pytest.approx((served["reward"] - 0.5) / 2.0, abs=1e-6)
        assert [f["feature"] for f in served["top_features"]] == [f["feature"] for f in row["top_features"]]
        served_terms = [f["contribution"] for f in served["top_features"]]
        assert served_terms == pytest.approx([f["contribution"] for f in row["top_features"]], abs=1e-5)
    status, bare = post(f"{server}/score", {"items": rows[:1]})
    assert status == 200 and set(bare["results"][0]) == {"reward"}  # no top features, no normalization asked


def test_health_and_info(server, exports):
    assert get(f"{server}/health") == (200, "ok")
    status, info = get(f"{server}/info")
    assert status == 200 and info["model"]["kind"] == "sarm" and info["model"]["normalize"] is False


GOOD = {"query": ["hello there"], "prompts": ["hello"]}
BAD_REQUESTS = [  # path, body, status, the message (it names the field)
    ("/get_reward", b'{"query": ["a"], "prompts": ', 400, "body: malformed JSON"),
    ("/get_reward", b'{"query": ["\xff"], "prompts": [""]}', 400, "body: not UTF-8 text"),
    ("/get_reward", b'["hello"]', 400, "body: expected a JSON object, got a list"),
    ("/get_reward", {"prompts": ["a"]}, 422, "query: missing"),
    ("/get_reward", {"query": ["hello there"]}, 422, "prompts: missing"),
    ("/get_reward", {"query": "hello there", "prompts": ["hello"]}, 422, "query: expected a list, got text"),
    ("/get_reward", {"query": [3], "prompts": ["hello"]}, 422, "query[0]: expected text, got a number"),
    ("/get_reward", {"query": ["a b", "c d"], "prompts": ["a"]}, 422, "prompts: 1 prompts for 2 queries"),
    ("/get_reward", {"query": [], "prompts": []}, 422, "query: empty list"),
    ("/get_reward", {"query": [""], "prompts": [""]}, 422, "query[0]: empty"),
    ("/get_reward", {"query": ["hello", "abc"], "prompts": ["he", "x"]}, 422, "prompts[1]: not a prefix of query[1]"),
    ("/get_reward", {"query": ["x" * 201], "prompts": ["x"]}, 422, "query[0]: 201 characters, more than"),
    ("/get_reward", {"query": ["a"] * 5, "prompts": ["a"] * 5}, 413, "query: 5 texts, more than this server's"),
    ("/get_reward", {"query": ["a" * 150] * 4, "prompts": ["a" * 150] * 4, "pad": "x" * 4000}, 413, "max_body_bytes"),
    ("/score", {"items": [{"prompt": "hi"}]}, 422, "items[0].response: missing"),
    ("/score", {"items": [{"prompt": "hi", "response": 7}]}, 422, "items[0].response: expected text, got a number"),
    ("/score", {"items": [{"prompt": [{"role": "user"}], "response": "a"}]}, 422, "items[0].prompt"),
    ("/score", {"items": ["hi"]}, 422, "items[0]: expected an object"),
    ("/score", {"items": [{"prompt": "", "response": ""}]}, 422, "items[0].response: empty"),
    ("/score", {"items": [{"prompt": "a", "response": "b" * 201}]}, 422, "items[0].response: 201 characters"),
    ("/score", {"items": [{"prompt": "a", "response": "b"}], "top_features": -1}, 422, "top_features: expected"),
    ("/score", {"items": [{"prompt": "a", "response": "b"}], "normalize": "yes"}, 422, "normalize: expected true"),
    ("/score", {"items": [{"prompt": "a", "response": "b"}], "top_feature": 3}, 422, "top_feature: unknown field"),
    ("/score", {"items": [{"prompt": "a", "response": "b", "id": 1}]}, 422, "items[0].id: unknown field"),
    ("/_sarm/batch", {"protocol": "sarm", "items": []}, 404, "Not Found"),  # LitServe's route: not from outside
]


@pytest.mark.parametrize("path, body, status, message", BAD_REQUESTS, ids=[c[3] for c in BAD_REQUESTS])
def test_a_bad_request_is_refused_and_the_server_keeps_serving(server, path, body, status, message):
    answered, reply = post(f"{server}{path}", body)
    assert (answered, message in reply["detail"]) == (status, True), reply
    assert post(f"{server}/get_reward", GOOD)[0] == 200


def test_a_get_on_a_scoring_path_is_405_and_a_form_post_is_read_as_json(server):
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{server}/score")
    assert refused.value.code == 405
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; the body is JSON all the same
    status, answer = post(f"{server}/get_reward", GOOD, content_type="application/x-www-form-urlencoded")
    assert status == 200 and answer["rewards"] == post(f"{server}/get_reward", GOOD)[1]["rewards"]


@pytest.mark.parametrize("kind", ["sarm", "residual", "dense"])
def test_batching_does_not_change_a_reward(exports, kind):
    """A text scored alone and in one batch with longer and shorter texts (right padding), through both protocols:
    the same reward to float rounding."""
    model = RewardModel.load(exports[kind])
    limits = Limits()
    text = read_sarm({"items": [{"prompt": "hello", "response": "the capital is paris"}]}, limits)
    others = read_sarm(
        {"items": [{"prompt": "a " * 20, "response": "b " * 15}, {"prompt": None, "response": "go"}]}, limits
    )
    as_query = read_openrlhf({"query": ["hello the capital is paris"], "prompts": ["hello"]}, limits)
    alone = score_payloads(model, [text], batch_size=8, normalize=False)[0]["rewards"][0]
    batched = score_payloads(model, [others, text, as_query], batch_size=8, normalize=False)
    assert batched[1]["rewards"][0] == pytest.approx(alone, abs=1e-5)
    assert batched[2]["rewards"][0] == pytest.approx(alone, abs=1e-5)
    if kind == "residual":  # the residual term and the feature share are logged for the trainer
        assert set(batched[2]["extra_logs"]) == {"residual", "feature_share"}
        assert set(batched[1]["results"][0]) >= {"reward", "residual", "feature_share"}


def test_normalize_makes_get_reward_answer_normalized_rewards_and_log_the_raw_ones(exports):
    model = RewardModel.load(exports["sarm"])
    payload = read_openrlhf({"query": ["hello there"], "prompts": ["hello"]}, Limits())
    (raw,) = score_payloads(model, [payload], batch_size=8, normalize=False)
    (normalized,) = score_payloads(model, [payload], batch_size=8, normalize=True)
    assert normalized["rewards"] == pytest.approx([(raw["rewards"][0] - 0.5) / 2.0])
    assert normalized["extra_logs"] == {"raw_reward": raw["rewards"]}


def test_a_bounded_load_run_stops_by_itself_with_every_reward_equal(server, exports, tmp_path):
    data = write_toy_pairs(tmp_path / "pairs.jsonl", n=12)
    summary = load_test(
        model=str(exports["sarm"]), data=str(data), url=server, requests=24, clients=6, texts_per_request=2,
        max_seconds=120,
    )  # fmt: skip
    assert (summary["answered"], summary["errors"], summary["not_sent"]) == (24, 0, 0)
    assert summary["texts"] == 48 and summary["all_equal"]
    refused = {case["case"]: (case["status"], case["still_serving"]) for case in summary["bad_requests"]}
    assert len(refused) >= 15 and all(400 <= status < 500 and after for status, after in refused.values()), refused


FAULTY_SERVER = """
import sys

import sarm.serve.api
from sarm.cli import main


class FaultyAPI(sarm.serve.api.RewardAPI):
    def predict(self, x):
        payloads = x if isinstance(x, list) else [x]
        if any("CRASH" in item["response"] for payload in payloads for item in payload["items"]):
            raise RuntimeError("a fault in scoring")
        return super().predict(x)


if __name__ == "__main__":
    sarm.serve.api.RewardAPI = FaultyAPI  # the workers unpickle it from this file (LitServe spawns them)
    main(["serve", *sys.argv[1:]])
"""


def test_a_batch_that_crashes_fails_its_requests_only(exports, tmp_path):
    script = tmp_path / "faulty_server.py"
    script.write_text(textwrap.dedent(FAULTY_SERVER))
    process, url = start([sys.executable, script, "--model", exports["sarm"], "--max_batch_size", "1"], tmp_path)
    try:
        status, reply = post(f"{url}/get_reward", {"query": ["hello CRASH"], "prompts": ["hello"]})
        assert status == 500 and reply["detail"]
        status, answer = post(f"{url}/get_reward", GOOD)
        assert status == 200
        assert answer["rewards"] == pytest.approx(offline(exports["sarm"], ["hello"], ["there"])[1].rewards.tolist())
    finally:
        stop(process)
