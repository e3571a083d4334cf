"""The sequences the cache's backbone runs over: rendered once, visited in batches of nearly equal length."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sarm.data.render import render_response


class RenderedSequences(Dataset):
    """Both sides of every pair (sequence ``2·pair`` chosen, ``2·pair + 1`` rejected), each rendered once.

    Sequences are visited longest-first by token count within windows of ``window`` consecutive sequences, so a
    batch of neighbours carries little padding: on the benchmark's data (``scripts/bench_cache.py``) batches of
    16 pad 2 % (short) and 4 % (long) over the real tokens, where the character-length proxy this replaced padded
    11 % and 16 %. Each shard still holds sequences of nearby pairs, so a reader walking the pairs in order needs
    only a few shards at a time. A window is rendered when its first sequence is asked for and held until another
    is: memory stays at one window's token ids, and a sequential sampler (the predict loop's, DDP's strided one
    too) renders every sequence once.

    ``texts`` is indexable by pair: ``texts[pair]`` holds ``prompt``, ``chosen`` and ``rejected``.
    """

    window = 2048

    def __init__(self, texts, tokenizer, max_length: int):
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length
        self._start: int | None = None
        self._items: list[dict] = []

    def __len__(self) -> int:
        return 2 * len(self.texts)

    def __getitem__(self, i: int) -> dict:
        start = i - i % self.window
        if start != self._start:
            self._items, self._start = self._render_window(start), start
        return self._items[i - start]

    def _render_window(self, start: int) -> list[dict]:
        """The window's sequences, longest first (ties in sequence order: the visit order is deterministic)."""
        items = [self._render(seq) for seq in range(start, min(start + self.window, len(self)))]
        lengths = torch.tensor([len(it["input_ids"]) for it in items], dtype=torch.long)
        return [items[j] for j in lengths.argsort(descending=True, stable=True).tolist()]

    def _render(self, seq: int) -> dict:
        pair = self.texts[seq // 2]
        rendered = render_response(
            self.tokenizer, pair["prompt"], pair["chosen" if seq % 2 == 0 else "rejected"], self.max_length
        )
        return {
            # A tensor, not a list of ints: a window of token ids costs 8 bytes a token, not ~36.
            "input_ids": torch.tensor(rendered.input_ids, dtype=torch.long),
            "response_start": rendered.response_start,
            "seq": seq,
            "truncated": rendered.truncated,
        }


def collate_right_padded(items: list[dict], pad_id: int) -> dict:
    """Right padding keeps every response's token positions as rendered; the mask hides the pad."""
    length = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for row, it in enumerate(items):
        ids[row, : len(it["input_ids"])] = torch.as_tensor(it["input_ids"])
        mask[row, : len(it["input_ids"])] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "length": mask.sum(1),
        "response_start": torch.tensor([it["response_start"] for it in items]),
        "seq": torch.tensor([it["seq"] for it in items]),
        "truncated": torch.tensor([it["truncated"] for it in items]),
    }
