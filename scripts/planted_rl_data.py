"""Planted inputs for ``sarm drift`` and ``sarm rerank``, from the held-out (test) pairs of a planted cache.

    python scripts/planted_rl_data.py --cache runs/demo/cache --pairs 100 --output runs/demo/rl

writes, from the first ``pairs`` test-split pairs of the cache (prompts the reward model never trained on):

* ``unchanged.jsonl``: both responses of each pair as they are (``prompt``, ``response``, ``prompt_id``, and the
  planted ``verbose``/``signoff`` flags): the same distribution as the reference, so the monitor must flag nothing;
* ``<distractor>.jsonl`` (``verbose``, ``signoff``): the same responses with that distractor pushed into every one
  that lacks it (``sarm.data.planted.push``): the drift a policy that learned the distractor would show;
* ``rerank.jsonl``: per pair, candidates = the chosen and rejected responses and the rejected one with each
  distractor pushed, in a seeded random order; ``correct`` is the chosen response's index, ``subset`` the deciding
  attribute (``sarm rerank`` copies it through).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from jsonargparse import CLI

from sarm.data.planted.generator import DISTRACTORS
from sarm.data.planted.push import push_distractor


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(cache: str = "runs/demo/cache", pairs: int = 100, output: str = "runs/demo/rl", seed: int = 0) -> None:
    """Write the planted sample sets and the rerank file (module docstring).

    Args:
        cache: a ``builtin:planted`` activation cache (its ``pairs.jsonl`` and test split).
        pairs: how many test pairs to use (the first ones).
        output: directory for the JSONL files.
        seed: the seed of the pushed distractor texts and the candidates' order.
    """
    rows = [json.loads(line) for line in (Path(cache) / "pairs.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"][:pairs]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sets: dict[str, list[dict]] = {"unchanged": [], **{d: [] for d in DISTRACTORS}}
    rerank = []
    for pair in test:
        for side in ("chosen", "rejected"):
            has = {d: pair["meta"][f"{side}_{d}"] for d in DISTRACTORS}
            base = {"prompt": pair["prompt"], "prompt_id": pair["prompt_id"], "side": side}
            sets["unchanged"].append(base | {"response": pair[side], **has})
            for d in DISTRACTORS:
                sets[d].append(base | {"response": push_distractor(pair[side], d, has, rng), **has, d: True})
        has = {d: pair["meta"][f"rejected_{d}"] for d in DISTRACTORS}
        candidates = [
            pair["chosen"],
            pair["rejected"],
            *(push_distractor(pair["rejected"], d, has, rng) for d in DISTRACTORS),
        ]
        candidates = list(dict.fromkeys(candidates))  # a rejected side that had a distractor already is not repeated
        order = rng.sample(range(len(candidates)), len(candidates))
        rerank.append(
            {
                "id": pair["prompt_id"],
                "prompt": pair["prompt"],
                "candidates": [candidates[i] for i in order],
                "correct": order.index(0),
                "subset": pair["meta"]["attribute"],
            }
        )
    for name, samples in sets.items():
        write_jsonl(out / f"{name}.jsonl", samples)
    write_jsonl(out / "rerank.jsonl", rerank)
    print(f"{len(test)} test pairs -> {', '.join(f'{n}.jsonl' for n in sets)}, rerank.jsonl in {out}")


if __name__ == "__main__":
    CLI(main, as_positional=False)
