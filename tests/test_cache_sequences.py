"""The cache's sequences: each rendered once, every one visited once, longest first by token count per window."""

from __future__ import annotations

import pytest
import torch

import sarm.cache.sequences as sequences
from sarm.cache.sequences import RenderedSequences, collate_right_padded
from sarm.data.render import render_response


@pytest.fixture
def texts():
    # Responses of very different lengths in characters and tokens, so the visit order is not the pair order.
    return [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": f"ok {i}" + " yes" * (i % 5),
            "rejected": f"no {i}" + " no" * i,
        }
        for i in range(11)
    ]


@pytest.fixture
def counted(monkeypatch):
    """How many times each (prompt, response) was rendered."""
    calls: dict[tuple[str, str], int] = {}

    def render(tokenizer, prompt, response, max_length):
        key = (prompt[0]["content"], response)
        calls[key] = calls.get(key, 0) + 1
        return render_response(tokenizer, prompt, response, max_length)

    monkeypatch.setattr(sequences, "render_response", render)
    return calls


@pytest.mark.parametrize("window", [4, 2048])
def test_every_sequence_once_rendered_once_longest_first_within_windows(
    texts, counted, tiny_tokenizer, monkeypatch, window
):
    monkeypatch.setattr(RenderedSequences, "window", window)
    data = RenderedSequences(texts, tiny_tokenizer, max_length=12)
    items = [data[i] for i in range(len(data))]

    assert sorted(it["seq"] for it in items) == list(range(2 * len(texts)))
    assert set(counted.values()) == {1}  # a sequential visit renders every sequence once
    for start in range(0, len(items), window):
        block = items[start : start + window]
        assert {it["seq"] // window for it in block} == {start // window}  # a window holds neighbouring sequences
        lengths = [len(it["input_ids"]) for it in block]
        assert lengths == sorted(lengths, reverse=True)
        ties = [(len(a["input_ids"]), a["seq"]) for a in block]
        assert ties == sorted(ties, key=lambda t: (-t[0], t[1]))  # equal lengths keep sequence order
    for it in items:  # each item is its sequence as rendered, truncation included
        pair = texts[it["seq"] // 2]
        expected = render_response(
            tiny_tokenizer, pair["prompt"], pair["chosen" if it["seq"] % 2 == 0 else "rejected"], 12
        )
        assert it["input_ids"].tolist() == expected.input_ids
        assert (it["response_start"], it["truncated"]) == (expected.response_start, expected.truncated)


def test_the_visit_order_is_deterministic(texts, tiny_tokenizer):
    first = [RenderedSequences(texts, tiny_tokenizer, 12)[i]["seq"] for i in range(2 * len(texts))]
    again = RenderedSequences(texts, tiny_tokenizer, 12)
    assert [again[i]["seq"] for i in range(2 * len(texts))] == first


def test_collate_pads_on_the_right(texts, tiny_tokenizer):
    data = RenderedSequences(texts, tiny_tokenizer, 12)
    items = [data[i] for i in range(4)]
    batch = collate_right_padded(items, pad_id=0)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], it["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["length"].tolist() == [len(it["input_ids"]) for it in items]
