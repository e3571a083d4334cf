"""sarm.explain: contexts from the cache, offline explanations, detection, the store, the LLM loop.

The LLM loop runs against a fake OpenAI-compatible server on 127.0.0.1 (port 0); no network.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import sarm.explain
from sarm.backbone import load_tokenizer
from sarm.cache import ActivationCache
from sarm.data.render import render_response
from sarm.errors import SarmInputError
from sarm.explain import (
    ChatClient,
    Context,
    Explanation,
    ExplanationStore,
    background_contexts,
    detection_score,
    explain_features,
    explain_offline,
    explain_with_llm,
    feature_activations,
    ngram_predictor,
    sae_fingerprint,
    top_activating_contexts,
)
from sarm.explain.fuzzing import fuzzing_score, highlight
from sarm.explain.heldout import score_llm
from sarm.explain.llm import Verdicts, llm_judge, yes_or_no
from sarm.explain.offline import ngram_key
from sarm.sae.io import load_sae, save_sae
from sarm.sae.topk import TopKSAE


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    return TopKSAE(32, 64, 4).eval()


@pytest.fixture(scope="module")
def sae_dir(sae, tmp_path_factory):
    return str(save_sae(sae, tmp_path_factory.mktemp("sae")))


@pytest.fixture(scope="module")
def cache(tiny_cache):
    return ActivationCache(tiny_cache["cache"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def acts(cache, sae):
    return feature_activations(cache, sae, list(range(64)))


@pytest.fixture(scope="module")
def busy_features(acts):
    """The three features that fire on the most sequences (a random SAE: some never fire)."""
    spread = {f: len(set(acts["token_seq"][v > 0].tolist())) for f, v in acts["activations"].items()}
    return sorted(spread, key=spread.get, reverse=True)[:3]


def _cached_tokens(cache):
    shards = [cache.load_shard(p) for p in cache.shard_paths()]
    return (
        torch.cat([s["tokens"] for s in shards]),
        torch.cat([s["token_seq"] for s in shards]).long(),
        torch.cat([s["token_pos"] for s in shards]).long(),
    )


def _contains(context: Context, tokens: list[str]) -> bool:
    window, key = ngram_key(context.tokens), tuple(tokens)
    return any(window[i : i + len(key)] == key for i in range(len(window) - len(key) + 1))


# ---------------------------------------------------------------- contexts


def test_top_contexts_are_sorted_one_per_sequence_and_match_a_fresh_encode(cache, sae, tokenizer, busy_features):
    tokens, seqs, positions = _cached_tokens(cache)
    tops = top_activating_contexts(cache, sae, busy_features, tokenizer, k=6, window=5)
    max_length = cache.manifest["settings"]["max_length"]
    for feature, contexts in tops.items():
        assert len(contexts) == 6
        values = [c.activation for c in contexts]
        assert values == sorted(values, reverse=True) and values[-1] > 0
        assert len({c.sequence for c in contexts}) == len(contexts)
        for c in contexts:
            assert c.pair == c.sequence // 2 and c.side == ("chosen", "rejected")[c.sequence % 2]
            assert c.activations[c.focus] == c.activation
            assert len(c.tokens) == len(c.activations) <= 11
            # the focus is its sequence's max token, and the value is what the SAE gives that cached token
            in_seq = seqs == c.sequence
            fresh = sae.encode(tokens[in_seq])[:, feature]
            row = int((positions[in_seq] == c.position).nonzero())
            assert fresh[row].item() == pytest.approx(c.activation, abs=1e-6)
            assert fresh.max().item() == pytest.approx(c.activation, abs=1e-6)
            # the window is the rendered sequence around the cached position; prompt tokens read 0
            pair = cache.pairs[c.pair]
            rendered = render_response(tokenizer, pair["prompt"], pair[c.side], max_length)
            assert c.tokens[c.focus] == tokenizer.decode(
                [rendered.input_ids[c.position]], clean_up_tokenization_spaces=False
            )
            start = c.position - c.focus
            for i, value in enumerate(c.activations):
                if start + i < rendered.response_start:
                    assert value == 0.0
                else:
                    cached = int((positions[in_seq] == start + i).nonzero())
                    assert value == pytest.approx(fresh[cached].item(), abs=1e-6)


def test_top_contexts_keep_to_the_split(cache, sae, tokenizer, busy_features):
    tops = top_activating_contexts(cache, sae, busy_features, tokenizer, k=50, split="train")
    assert all(cache.pairs[c.pair]["split"] == "train" for cs in tops.values() for c in cs)
    assert any(tops.values())


def test_background_contexts_are_off_distinct_and_seeded(cache, sae, tokenizer, busy_features, acts):
    feature = busy_features[0]
    top = top_activating_contexts(cache, sae, [feature], tokenizer, k=5, activations=acts)[feature]
    exclude = {c.sequence for c in top}
    first = background_contexts(
        cache, sae, [feature], tokenizer, n=10, window=4, seed=1, exclude=exclude, activations=acts
    )[feature]
    again = background_contexts(
        cache, sae, [feature], tokenizer, n=10, window=4, seed=1, exclude=exclude, activations=acts
    )[feature]
    other = background_contexts(
        cache, sae, [feature], tokenizer, n=10, window=4, seed=2, exclude=exclude, activations=acts
    )[feature]
    assert len(first) == 10 and first == again and first != other
    assert len({c.sequence for c in first}) == 10 and not exclude & {c.sequence for c in first}
    assert all(c.activation == 0.0 and c.activations[c.focus] == 0.0 for c in first)
    assert all(max(c.activations) == 0.0 for c in first)  # clean windows exist for this feature


def test_contexts_reject_a_mismatched_sae_or_feature(cache, tokenizer):
    with pytest.raises(SarmInputError, match="width"):
        feature_activations(cache, TopKSAE(16, 64, 4), [0])
    with pytest.raises(SarmInputError, match="out of range"):
        feature_activations(cache, TopKSAE(32, 64, 4), [64])


# ---------------------------------------------------------------- offline explanations and detection


def _ctx(text: str, focus_word: str | None, activation: float = 0.0) -> Context:
    tokens = [w if i == 0 else " " + w for i, w in enumerate(text.split())]
    focus = text.split().index(focus_word) if focus_word else 0
    acts = [0.0] * len(tokens)
    acts[focus] = activation
    return Context(
        pair=0,
        side="chosen",
        sequence=0,
        position=focus,
        activation=activation,
        tokens=tokens,
        activations=acts,
        focus=focus,
    )


ACTIVE = [
    _ctx(t, "sorry", 2.0)
    for t in [
        "I am sorry but no",
        "so sorry I cannot",
        "we are sorry to say",
        "sorry that is not possible",
        "really sorry about it",
        "oh sorry no way",
    ]
]
QUIET = [
    _ctx(t, None)
    for t in [
        "the capital is paris",
        "happy to help you",
        "here is the answer",
        "I can do that",
        "thank you for asking",
        "that is a good question",
    ]
]


def test_offline_explanation_finds_the_planted_word_and_detects_it():
    explanation = explain_offline(ACTIVE[0::2], QUIET[0::2])
    assert explanation.method == "offline" and explanation.detection is None
    assert explanation.evidence[0]["ngram"] == "sorry" and explanation.text.startswith('fires on "sorry"')
    assert detection_score(ngram_predictor(explanation), ACTIVE[1::2], QUIET[1::2]) == 1.0


def test_offline_evidence_occurs_in_the_activating_windows(cache, sae, tokenizer, busy_features, acts):
    for feature in busy_features:
        top = top_activating_contexts(cache, sae, [feature], tokenizer, k=8, activations=acts)[feature]
        background = background_contexts(
            cache, sae, [feature], tokenizer, n=16, activations=acts, exclude={c.sequence for c in top}
        )[feature]
        explanation = explain_offline(top, background)
        assert explanation.evidence, explanation.text
        for entry in explanation.evidence:
            assert entry["score"] > 0 and entry["active"] >= 1.0
            assert f'"{entry["ngram"]}"' in explanation.text
            assert any(_contains(c, entry["tokens"]) for c in top)
            assert sum(_contains(c, entry["tokens"]) for c in background) == entry["background"]


def test_detection_score_is_balanced_accuracy():
    active, inactive = ACTIVE, QUIET[:2]  # unbalanced on purpose
    assert detection_score(lambda c: c.activation > 0, active, inactive) == 1.0
    assert detection_score(lambda c: True, active, inactive) == 0.5
    assert detection_score(lambda c: False, active, inactive) == 0.5
    assert detection_score(lambda c: c.activation == 0, active, inactive) == 0.0
    with pytest.raises(ValueError):
        detection_score(lambda c: True, active, [])


# ---------------------------------------------------------------- the store


def test_store_round_trip_and_fingerprint(tmp_path, sae, sae_dir):
    key = sae_fingerprint(sae)
    assert sae_fingerprint(load_sae(sae_dir)) == key  # the saved and loaded SAE is the same SAE
    changed = TopKSAE(32, 64, 4)
    changed.load_state_dict(sae.state_dict())
    with torch.no_grad():
        changed.b_enc[3] += 1e-3
    assert sae_fingerprint(changed) != key

    store = ExplanationStore(tmp_path / "e.json")
    assert store.get(key, 3, "offline") is None
    store.put(key, 3, Explanation("fires on x", "offline", [{"ngram": "x"}], 0.75), cache="somewhere")
    assert store.get(key, 3, "offline") == Explanation("fires on x", "offline", [{"ngram": "x"}], 0.75)
    assert store.get(key, 3, "llm") is None and store.get(key, 4, "offline") is None
    assert store.get("other", 3, "offline") is None
    entry = json.loads((tmp_path / "e.json").read_text())["explanations"][key]["3"]["offline"]
    assert entry["cache"] == "somewhere" and entry["created"] and entry["detection"] == 0.75

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SarmInputError, match="bad.json"):
        ExplanationStore(tmp_path / "bad.json").get(key, 3, "offline")


def test_explain_features_reuses_stored_explanations(tiny_cache, sae, sae_dir, busy_features, tmp_path, monkeypatch):
    monkeypatch.setenv("SARM_CACHE", str(tmp_path / "sarm-cache"))
    calls = []

    def counting(active, background):
        calls.append(len(active))
        return explain_offline(active, background)

    monkeypatch.setattr(sarm.explain, "explain_offline", counting)
    first = explain_features(str(tiny_cache["cache"]), sae_dir, busy_features, k=4, n_background=6)
    assert len(calls) == len(busy_features)
    path = tmp_path / "sarm-cache" / "explanations" / f"{sae_fingerprint(sae)}.json"
    assert path.is_file()
    for feature in busy_features:
        result = first[feature]
        assert set(result["explanation"]) == {"text", "method", "detection", "evidence"}
        assert 0.0 <= result["explanation"]["detection"] <= 1.0
        assert len(result["contexts"]) == 4 and result["contexts"][0]["activation"] > 0

    second = explain_features(str(tiny_cache["cache"]), sae_dir, busy_features, k=4, n_background=6)
    assert len(calls) == len(busy_features)  # nothing recomputed
    assert {f: r["explanation"] for f, r in second.items()} == {f: r["explanation"] for f, r in first.items()}


# ---------------------------------------------------------------- the LLM loop, against a fake endpoint


def fake_llm(messages: list[dict]) -> str:
    """Canned answers, routed on the prompt's wording."""
    prompt = messages[-1]["content"]
    if "hypotheses about what the feature detects" in prompt:
        return '```json\n["fires on refusals", "fires on numbers"]\n```'
    if "should make the feature fire" in prompt:
        if "numbers" in prompt:
            return json.dumps({"activating": ["number 7"], "non_activating": ["no digits here"]})
        return json.dumps(
            {
                "activating": ["I will not answer you", "I refuse"],
                "non_activating": ["the capital is paris", "happy to help"],
            }
        )
    if "confirm the hypothesis" in prompt:
        if "numbers" in prompt:
            return '{"verdict": "refuted", "hypothesis": "fires on numbers"}'
        return '{"verdict": "refined", "hypothesis": "fires on first-person refusals"}'
    if "final explanation" in prompt:
        return '"Fires on first-person refusals."\n'
    if "Are the marked tokens" in prompt:
        return fake_fuzz_verdict(prompt.split("Text:\n")[1])
    if "Answer yes or no" in prompt:
        return "Yes." if ("not" in prompt.split("Text:")[1] or "refuse" in prompt.split("Text:")[1]) else "no"
    raise AssertionError(prompt)


def fake_fuzz_verdict(text: str) -> str:
    """The fake judge's fuzzing answer, scripted from the highlighted window it is shown: yes when every marked
    token is "sorry", else no; and, whatever is marked, an answer that is neither for a window with "very"."""
    if "very" in text:
        return "It is hard to say from this window."
    marked = re.findall(r"<<(.*?)>>", text)
    return "**Yes.**" if marked and all(m.strip() == "sorry" for m in marked) else "No, those are other tokens."


class FakeEndpoint:
    def __init__(self):
        self.requests: list[dict] = []
        self.respond = lambda body: (
            200,
            json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": fake_llm(body["messages"])}}]}
            ).encode(),
        )
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload = endpoint.respond(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = FakeEndpoint()
    yield server
    server.close()


def refusal_activation(texts: list[str]) -> list[float]:
    return [2.0 if ("not" in t or "refuse" in t) else 0.0 for t in texts]


def test_llm_loop_tests_hypotheses_on_real_activations(endpoint, monkeypatch):
    monkeypatch.setenv("SARM_TEST_KEY", "sk-test")
    client = ChatClient(endpoint.base_url, "fake-model", api_key_env="SARM_TEST_KEY", temperature=0.3)
    measured = []

    def activate(texts):
        measured.append(list(texts))
        return refusal_activation(texts)

    explanation = explain_with_llm(client, ACTIVE[:3], activate, n_hypotheses=2, n_tests=2, rounds=2)
    assert explanation.text == "Fires on first-person refusals."
    assert explanation.method == "llm" and explanation.detection is None

    prompts = [r["body"]["messages"][-1]["content"] for r in endpoint.requests]
    # 1 hypotheses + round 1: 2 × (tests, verdict) + round 2: the refined survivor × 2 + 1 conclusion
    assert len(prompts) == 8
    for r in endpoint.requests:
        assert r["path"] == "/v1/chat/completions"
        assert r["headers"]["Authorization"] == "Bearer sk-test"
        assert r["body"]["model"] == "fake-model" and r["body"]["temperature"] == 0.3
        assert [m["role"] for m in r["body"]["messages"]] == ["system", "user"]
    assert "<<" in prompts[0] and "sorry" in prompts[0]  # the exemplars, focus marked
    assert "[should fire] 'I refuse': 2" in prompts[2] and "[should not fire] 'happy to help': 0" in prompts[2]
    assert "first-person refusals" in prompts[5]  # round 2 tests the refined hypothesis
    assert "refuted" in prompts[-1] and "separation 1.00" in prompts[-1]

    assert measured[0] == ["I will not answer you", "I refuse", "the capital is paris", "happy to help"]
    assert {(e["text"], e["activation"], e["expected"]) for e in explanation.evidence} >= {
        ("I refuse", 2.0, True),
        ("happy to help", 0.0, False),
        ("number 7", 0.0, True),
    }
    assert {e["round"] for e in explanation.evidence} == {1, 2}


def test_endpoint_errors_name_the_url(endpoint):
    client = ChatClient(endpoint.base_url, "fake-model", api_key_env=None, timeout=0.5)
    url = endpoint.base_url + "/chat/completions"
    assert client.ask("Answer yes or no. Text:\nI refuse") == "Yes."
    assert "Authorization" not in endpoint.requests[-1]["headers"]  # no key configured, none sent

    endpoint.respond = lambda body: (500, b'{"error": "boom"}')
    with pytest.raises(SarmInputError, match=f"{url}: HTTP 500.*boom"):
        client.ask("hi")
    endpoint.respond = lambda body: (200, b"<html>not json</html>")
    with pytest.raises(SarmInputError, match=f"{url}: the answer is not JSON"):
        client.ask("hi")
    endpoint.respond = lambda body: (200, b'{"choices": []}')
    with pytest.raises(SarmInputError, match=f"{url}: the answer has no choices"):
        client.ask("hi")

    def slow(body):
        time.sleep(1.5)
        return 200, b"{}"

    endpoint.respond = slow
    with pytest.raises(SarmInputError, match=f"{url}: no answer within"):
        client.ask("hi")

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SarmInputError, match=f"127.0.0.1:{port}/v1/chat/completions: cannot reach"):
        ChatClient(f"http://127.0.0.1:{port}/v1", "m").ask("hi")


def test_explain_features_llm_scores_detection_and_reuses_the_store(
    tiny_cache, sae_dir, busy_features, endpoint, tmp_path
):
    seen = []

    def activate(texts, feature):
        seen.append(feature)
        return refusal_activation(texts)

    kwargs = {
        "method": "llm",
        "k": 4,
        "n_background": 4,
        "llm_base_url": endpoint.base_url,
        "llm_model": "fake-model",
        "activate": activate,
        "store_path": str(tmp_path / "store.json"),
    }
    feature = busy_features[0]
    first = explain_features(str(tiny_cache["cache"]), sae_dir, [feature], **kwargs)
    explanation = first[feature]["explanation"]
    assert explanation["text"] == "Fires on first-person refusals." and explanation["method"] == "llm"
    assert 0.0 <= explanation["detection"] <= 1.0 and set(seen) == {feature}
    asked = len(endpoint.requests)
    detect = [r for r in endpoint.requests if "Answer yes or no" in r["body"]["messages"][-1]["content"]]
    assert len(detect) == 8  # held out: the odd ranks of 2k = 8 top and of 2·4 = 8 background contexts

    second = explain_features(str(tiny_cache["cache"]), sae_dir, [feature], **kwargs)
    assert second[feature]["explanation"] == explanation and len(endpoint.requests) == asked

    with pytest.raises(SarmInputError, match="llm_base_url"):
        explain_features(str(tiny_cache["cache"]), sae_dir, [feature], method="llm", activate=activate)


# ---------------------------------------------------------------- LLM judges: detection and fuzzing


def test_yes_or_no_reads_the_first_answer_and_calls_the_rest_malformed():
    for reply in ("Yes.", "**Yes**", "yes, it does", "I think yes", '{"answer": "Yes"}', '```json\n{"a": "yes"}```'):
        assert yes_or_no(reply) is True, reply
    for reply in ("no", "No, it does not.", "Answer: no", "The answer is no; yes would be wrong"):
        assert yes_or_no(reply) is False, reply
    for reply in ("", "maybe", "Nope", "yes or no", "Yes/No", '{"answer": 3}'):
        assert yes_or_no(reply) is None, reply
    verdicts = Verdicts()
    assert [verdicts.read(r) for r in ("Yes", "no", "hmm")] == [True, False, False]  # malformed counts as no
    assert (verdicts.yes, verdicts.no, verdicts.malformed) == (1, 1, 1)


SORRY_WINDOWS = [
    _ctx("I am sorry but no", "sorry", 2.0),
    _ctx("so sorry I cannot", "sorry", 2.0),
    _ctx("we are very sorry to say", "sorry", 2.0),
    _ctx("sorry that is not possible", "sorry", 2.0),
]


def test_llm_judge_verdicts_flow_into_the_fuzzing_score(endpoint):
    client = ChatClient(endpoint.base_url, "fake-model", api_key_env=None)
    explanation = Explanation('the word "sorry"', "offline")
    examples = highlight(SORRY_WINDOWS, seed=0)
    verdicts = Verdicts()
    score = fuzzing_score(llm_judge(client, explanation, verdicts), examples)

    # one request per highlighted copy, showing the explanation and exactly that copy's marking
    prompts = [r["body"]["messages"][-1]["content"] for r in endpoint.requests]
    assert len(prompts) == len(examples)
    assert all('explained as: the word "sorry"' in prompt for prompt in prompts)
    shown = sorted(p.split("Text:\n")[1].split("\n\nAre the marked")[0] for p in prompts)
    assert shown == sorted(e.marked_text() for e in examples)
    # the fake says yes to every correct copy but the "very" window's (malformed: counted as no) and no to every
    # fuzzed copy (malformed for "very" too, which is right by accident): ½ (3/4 + 4/4)
    assert (verdicts.yes, verdicts.no, verdicts.malformed) == (3, 3, 2)
    assert score == 0.5 * (3 / 4 + 4 / 4)
    # the same verdicts from a local function give the same score: nothing is lost on the wire
    local = fuzzing_score(lambda e: yes_or_no(fake_fuzz_verdict(e.marked_text())) is True, examples)
    assert score == local


def test_score_llm_writes_from_train_and_judges_held_out_by_detection_and_fuzzing(endpoint):
    client = ChatClient(endpoint.base_url, "fake-model", api_key_env=None)
    contexts = {
        "write_active": ACTIVE[:3],
        "write_background": QUIET[:3],
        "held_active": SORRY_WINDOWS,
        "held_background": QUIET[3:],
    }
    row = score_llm(client, contexts, refusal_activation, seed=0, n_hypotheses=2, n_tests=2, rounds=1)
    assert row["explanation"] == "Fires on first-person refusals."
    prompts = [r["body"]["messages"][-1]["content"] for r in endpoint.requests]
    exemplars = prompts[0]
    # written from the write contexts only: their words are in the exemplars, the held-out ones' are not
    assert all(word in exemplars for word in ("but no", "I cannot", "to say"))
    assert not any(word in exemplars for word in ("very", "possible", "paris", "thank"))
    # detection: the fake says yes to texts with "not"/"refuse": held active 2 of 4 ("cannot", "not possible"),
    # held background 0 of 3 → ½ (2/4 + 3/3)
    assert row["detection"] == 0.5 * (2 / 4 + 3 / 3)
    assert row["fuzzing"] == 0.5 * (3 / 4 + 4 / 4)  # the verdicts of the test above, through the same judge
    assert row["verdicts"]["detection"] == {"yes": 2, "no": 5, "malformed": 0}
    assert row["verdicts"]["fuzzing"] == {"yes": 3, "no": 3, "malformed": 2}
    detect = [p for p in prompts if "Does the feature fire" in p]
    assert len(detect) == 7 and all("first-person refusals" in p for p in detect)


def test_explanations_script_prints_the_llm_loop_beside_the_offline_explainer(
    tiny_cache, sae, endpoint, tmp_path, monkeypatch, capsys
):
    import sys
    from pathlib import Path

    from sarm.reward.export import SAE_DIR

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import explanations
    finally:
        sys.path.pop(0)
    save_sae(sae, tmp_path / "export" / SAE_DIR)
    measured = []

    def probe(sarm_dir):  # stands in for the SARM's backbone + SAE: the fake's refusal activations
        def activate(texts, feature):
            measured.append(feature)
            return refusal_activation(texts)

        return activate

    monkeypatch.setattr(explanations, "activation_probe", probe)
    (tmp_path / "features.json").write_text(json.dumps({"features": [{"feature": f} for f in (5, 9)]}))
    result = explanations.main(
        cache=str(tiny_cache["cache"]),
        sarm=str(tmp_path / "export"),
        features_json=str(tmp_path / "features.json"),
        top=2, k=4, n_background=4, window=3, output=str(tmp_path / "out"), threads=1,
        endpoint=endpoint.base_url, model="fake-model", api_key_env=None,
    )  # fmt: skip
    rows = result["features"]
    assert set(measured) <= {5, 9} and measured  # the loop's tests were measured per feature
    for row in rows:
        assert row["llm"]["explanation"] == "Fires on first-person refusals."
        for name in ("detection", "fuzzing"):
            assert row["llm"][name] is None or 0.0 <= row["llm"][name] <= 1.0
    llm = result["summary"]["llm"]
    scored = [r["llm"]["detection"] for r in rows if r["llm"]["detection"] is not None]
    assert llm["detection_scored"] == len(scored) and llm["detection_mean"] == pytest.approx(sum(scored) / len(scored))
    out = capsys.readouterr().out
    assert "LLM loop, LLM judge: mean detection" in out and "offline explainer, n-gram judge: mean detection" in out
    assert "LLM: Fires on first-person refusals." in out and "not run" not in out
    with pytest.raises(SarmInputError, match="--model"):
        explanations.main(cache=str(tiny_cache["cache"]), sarm=str(tmp_path / "export"), endpoint=endpoint.base_url)
