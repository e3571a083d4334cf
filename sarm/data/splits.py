"""Train/val/test splits by prompt: no prompt is ever in two splits, so evaluation cannot leak."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from sarm.data.rows import PreferencePair
from sarm.errors import SarmInputError

SPLITS = ("train", "val", "test")  # the splits, in the order a cache numbers them


def split_by_prompt(
    pairs: Sequence[PreferencePair], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[PreferencePair]]:
    """Split pairs into "train", "val" and "test" by prompt, so no prompt is in two splits.

    The rule: the distinct ``prompt_id``s are sorted, shuffled with ``random.Random(seed)``, and laid
    end to end, each taking as much room as it has pairs. The line is cut at ``fractions[0]`` and
    ``fractions[0] + fractions[1]`` of the pairs, and each prompt goes to the split where its
    midpoint falls. So every boundary misses its target by at most half a prompt's pairs, a split
    with fraction 0 stays empty, and the result depends on the seed and the set of pairs, not on
    their order. The pairs of a split keep their original order (and are the same objects).
    """
    splits: dict[str, list[PreferencePair]] = {split: [] for split in SPLITS}
    for pair, split in zip(pairs, assign_splits([pair.prompt_id for pair in pairs], fractions, seed)):
        splits[split].append(pair)
    return splits


def assign_splits(
    prompt_ids: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[str]:
    """Each pair's split ("train", "val" or "test") from the pairs' prompt ids, by the rule of
    ``split_by_prompt`` (which it implements)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise SarmInputError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    sizes: dict[str, int] = {}
    for prompt_id in prompt_ids:
        sizes[prompt_id] = sizes.get(prompt_id, 0) + 1
    order = sorted(sizes)
    random.Random(seed).shuffle(order)

    total = len(prompt_ids)
    train_end, val_end = fractions[0] * total, (fractions[0] + fractions[1]) * total
    split_of: dict[str, str] = {}
    start = 0
    for prompt_id in order:
        midpoint = start + sizes[prompt_id] / 2
        split_of[prompt_id] = "train" if midpoint <= train_end else "val" if midpoint <= val_end else "test"
        start += sizes[prompt_id]
    return [split_of[prompt_id] for prompt_id in prompt_ids]
