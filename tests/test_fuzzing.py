"""sarm.explain.fuzzing (highlighting, balanced accuracy, the n-gram judge), sarm.explain.heldout (no overlap
between the contexts an explanation is written from and scored on), and scripts/explanations.py on the tiny cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sarm.backbone import load_tokenizer
from sarm.cache import ActivationCache
from sarm.explain import Context, Explanation, explain_offline
from sarm.explain.detection import detection_score, ngram_predictor
from sarm.explain.fuzzing import (
    HighlightedContext,
    active_positions,
    covered_positions,
    fuzzing_score,
    highlight,
    ngram_judge,
)
from sarm.explain.heldout import held_out_contexts, score_offline
from sarm.explain.offline import ngram_key, occurrences
from sarm.sae.topk import TopKSAE


def _ctx(words: list[str], active: set[int]) -> Context:
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    acts = [2.0 if i in active else 0.0 for i in range(len(tokens))]
    focus = min(active) if active else 0
    return Context(0, "chosen", 0, focus, acts[focus], tokens, acts, focus)


SORRY = [
    _ctx("I am sorry but no way".split(), {2}),
    _ctx("so sorry I cannot help".split(), {1}),
    _ctx("we are very sorry to say this".split(), {3}),
    _ctx("sorry that is not possible here".split(), {0}),
    _ctx("really sorry about it all".split(), {1}),
]


def _explanation(*ngrams: str) -> Explanation:
    evidence = [{"ngram": g, "tokens": list(ngram_key(g.split()))} for g in ngrams]
    return Explanation(text="fires on " + ", ".join(ngrams), method="offline", evidence=evidence)


def test_highlight_makes_a_correct_and_a_same_size_fuzzed_copy():
    examples = highlight(SORRY, seed=3)
    assert len(examples) == 2 * len(SORRY)
    for correct, fuzzed in zip(examples[0::2], examples[1::2]):
        assert correct.correct and not fuzzed.correct and correct.context is fuzzed.context
        assert correct.highlighted == active_positions(correct.context)
        assert len(fuzzed.highlighted) == len(correct.highlighted)
        assert not set(fuzzed.highlighted) & set(correct.highlighted)  # drawn among inactive positions
    assert highlight(SORRY, seed=3) == examples  # seeded
    assert examples[0].marked_text() == "I am<< sorry>> but no way"
    # no active token, or no inactive one: no pair of copies
    assert highlight([_ctx(["a", "b"], set()), _ctx(["a", "b"], {0, 1})]) == []
    # more active than inactive: the fuzzed copy keeps the size, topping up with active positions
    (correct, fuzzed) = highlight([_ctx(["a", "b", "c", "d"], {0, 1, 2})], seed=0)
    assert len(fuzzed.highlighted) == 3 and 3 in fuzzed.highlighted and fuzzed.highlighted != correct.highlighted


def test_fuzzing_score_is_balanced_accuracy():
    examples = highlight(SORRY, seed=0)
    assert fuzzing_score(lambda e: e.correct, examples) == 1.0
    assert fuzzing_score(lambda e: not e.correct, examples) == 0.0
    assert fuzzing_score(lambda e: True, examples) == 0.5
    assert fuzzing_score(lambda e: False, examples) == 0.5
    # unbalanced: 1 of 2 correct right (½), 3 of 3 fuzzed right (1) → ¾, not the plain accuracy 4/5
    c = SORRY[0]
    unbalanced = [
        HighlightedContext(c, [2], True),
        HighlightedContext(c, [0], True),
        *[HighlightedContext(c, [j], False) for j in (1, 3, 4)],
    ]
    assert fuzzing_score(lambda e: e.highlighted == [2], unbalanced) == 0.75
    with pytest.raises(ValueError):
        fuzzing_score(lambda e: True, examples[0::2])


def test_a_perfect_explanation_scores_one_and_a_blank_one_a_half():
    examples = highlight(SORRY, seed=0)
    assert fuzzing_score(ngram_judge(_explanation("sorry")), examples) == 1.0
    assert fuzzing_score(ngram_judge(Explanation(text="nothing", method="offline")), examples) == 0.5
    # an n-gram absent from the windows covers nothing: also chance
    assert fuzzing_score(ngram_judge(_explanation("banana")), examples) == 0.5
    # the explanation learned offline from other windows finds the word
    quiet = [_ctx(t.split(), set()) for t in ("the capital is paris", "happy to help you", "here is the answer")]
    learned = explain_offline(SORRY[:3], quiet)
    assert fuzzing_score(ngram_judge(learned), highlight(SORRY[3:], seed=1)) == 1.0


def test_covered_positions_and_the_judge_rule():
    tokens = ["I", " am", " Sorry", " but", " no"]
    assert covered_positions(tokens, [("sorry",)]) == {2}
    assert covered_positions(tokens, [("sorry", "but"), ("i",)]) == {0, 2, 3}
    judge = ngram_judge(_explanation("sorry but"))
    c = _ctx(["I", "am", "sorry", "but", "no"], {2})
    assert judge(HighlightedContext(c, [2], True))  # 1/1 covered vs 1/4
    assert judge(HighlightedContext(c, [2, 3], True))  # 2/2 vs 0/3
    assert not judge(HighlightedContext(c, [0], False))  # 0/1 vs 2/4
    assert not judge(HighlightedContext(c, [0, 1], False))  # 0/2 vs 2/3


# ---------------------------------------------------------------- held-out contexts on the tiny cache


@pytest.fixture(scope="module")
def tiny(tiny_cache, tiny_model_dir):
    torch.manual_seed(0)
    sae = TopKSAE(32, 64, 4).eval()
    cache = ActivationCache(tiny_cache["cache"])
    return cache, sae, load_tokenizer(tiny_model_dir)


def test_held_out_contexts_come_from_val_and_test_only(tiny):
    cache, sae, tokenizer = tiny
    features = list(range(0, 64, 4))
    contexts = held_out_contexts(cache, sae, features, tokenizer, k=8, n_background=8, window=4)
    split = {i: p["split"] for i, p in enumerate(cache.pairs)}
    some_held = False
    for parts in contexts.values():
        written = parts["write_active"] + parts["write_background"]
        held = parts["held_active"] + parts["held_background"]
        assert all(split[c.pair] == "train" for c in written)
        assert all(split[c.pair] in ("val", "test") for c in held)
        assert not {c.pair for c in written} & {c.pair for c in held}  # no shared pair, so no shared sequence
        assert len(parts["held_active"]) <= 8 and len(parts["held_background"]) <= 8
        acts = [c.activation for c in parts["held_active"]]
        assert acts == sorted(acts, reverse=True) and all(a > 0 for a in acts)
        assert all(c.activation == 0 for c in parts["held_background"])
        assert not {c.sequence for c in parts["held_active"]} & {c.sequence for c in parts["held_background"]}
        some_held |= bool(parts["held_active"] and parts["held_background"])
        scored = score_offline(parts)
        for name in ("detection", "fuzzing"):
            assert scored[name] is None or 0.0 <= scored[name] <= 1.0
    assert some_held


def test_explanations_script_on_the_tiny_cache(tiny_cache, tiny_model_dir, tmp_path, capsys):
    from sarm.reward.export import SAE_DIR
    from sarm.sae.io import save_sae

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import explanations
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    sae = TopKSAE(32, 64, 4).eval()
    export = tmp_path / "export"
    save_sae(sae, export / SAE_DIR)
    ranked = {"features": [{"feature": f} for f in (5, 9, 1, 40)]}
    (tmp_path / "features.json").write_text(json.dumps(ranked))
    result = explanations.main(
        cache=str(tiny_cache["cache"]),
        sarm=str(export),
        features_json=str(tmp_path / "features.json"),
        top=3,
        k=6,
        n_background=6,
        window=4,
        output=str(tmp_path / "out"),
        threads=1,
    )
    assert [r["feature"] for r in result["features"]] == [5, 9, 1]
    written = json.loads((tmp_path / "out" / "explanations.json").read_text())
    offline = written["summary"]["offline"]
    assert offline["detection_scored"] == sum(r["detection"] is not None for r in written["features"])
    assert written["summary"]["llm"] is None and "not run (no --endpoint given)" in capsys.readouterr().out
    for r in written["features"]:
        assert r["fuzzing"] is None or 0.0 <= r["fuzzing"] <= 1.0


# ---------------------------------------------------------------- what the offline explainer writes, held out


def _numbers(text: str, digit: int) -> Context:
    words = text.split()
    return _ctx(words, {i for i, w in enumerate(words) if w.isdigit()} or {digit})


WORDS = ["the cat sat on a mat", "we went home early today", "please pass the salt now", "good luck with it all"]


def test_a_feature_on_any_number_is_explained_by_numbers_and_detects_unseen_digits():
    train = [_numbers(t, 0) for t in ("add 1 and 2 here", "take 3 of them", "about 4 or 5 more", "page 1 of 3")]
    held = [_numbers(t, 0) for t in ("buy 7 apples", "it is 9 now", "call 8 times", "only 6 left today")]
    background = [_ctx(t.split(), set()) for t in WORDS]
    scored = {}
    for classes in (True, False):
        explanation = explain_offline(train, background, classes=classes)
        detect = detection_score(ngram_predictor(explanation), held, background)
        fuzz = fuzzing_score(ngram_judge(explanation), highlight(held, seed=0))
        scored[classes] = (explanation.text, detect, fuzz)
    text, detect, fuzz = scored[True]
    assert text.startswith("fires on numbers") and detect == 1.0 and fuzz == 1.0
    assert scored[False][1] == 0.5 and scored[False][2] == 0.5  # the train digits never occur held out


def test_occurrences_match_literal_tokens_and_token_classes():
    tokens = ["Page", " 12", ",", " then", " 3", "!"]
    assert occurrences(tokens, ("page",)) == [0]
    assert occurrences(tokens, ("<digits>",)) == [1, 4]
    assert occurrences(tokens, ("<digits>", "<punctuation>")) == [1, 4]
    assert occurrences(tokens, ("then", "<digits>")) == [3]
    assert occurrences(["trou", "ble", " here"], ("<word piece>",)) == [1]
    assert covered_positions(tokens, [("<digits>",), ("then",)]) == {1, 3, 4}


def test_the_general_ngram_replaces_the_specific_one_and_repeated_windows_count_once():
    active = [
        _ctx("the scientific evidence is clear".split(), {2}),
        _ctx("there is evidence of this".split(), {2}),
        _ctx("no evidence was found".split(), {1}),
    ]
    background = [_ctx(t.split(), set()) for t in WORDS]
    # the first window three times, as a response shared by three pairs: its trigram would outscore "evidence"
    explanation = explain_offline(active[:1] * 3 + active[1:], background)
    listed = [e["ngram"] for e in explanation.evidence]
    assert "evidence" in listed and not [g for g in listed if "evidence" in g and g != "evidence"]
    assert explanation == explain_offline(active, background)  # the repeats change nothing
    held = [_ctx("strong evidence suggests so".split(), {1})]
    assert detection_score(ngram_predictor(explanation), held, background) == 1.0
