"""Write a preference file in Anthropic HH-RLHF's published layout, with the faults HH really ships.

HH-RLHF (``train.jsonl.gz`` / ``test.jsonl.gz``) has two columns, ``chosen`` and ``rejected``, each a whole
transcript ``"\\n\\nHuman: …\\n\\nAssistant: …"``, gzip-compressed JSON Lines. About 0.4 % of its rows stop a
strict reader: a final ``Assistant:`` turn with nothing after it, or two transcripts that differ before the
final turn. It cannot be downloaded here, so this script lays any ``prompt``/``chosen``/``rejected`` file
(the shared RewardBench 2 safety pairs by default) out the same way and plants those two faults in a seeded
random ``fault_rate`` of the rows each, to show that such a file runs as published:

    python scripts/hh_layout.py --output runs/hh/rb2_safety.jsonl.gz
    sarm cache --config configs/rewardbench2/cache.yaml --data runs/hh/rb2_safety.jsonl.gz --bad_rows skip \\
        --output runs/hh/cache
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from jsonargparse import CLI


def transcript(prompt: str, response: str) -> str:
    return f"\n\nHuman: {prompt}\n\nAssistant: {response}" if response else f"\n\nHuman: {prompt}\n\nAssistant:"


def hh_layout(
    source: str = "../shared/data/rewardbench2_safety.jsonl",
    output: str = "runs/hh/rb2_safety.jsonl.gz",
    fault_rate: float = 0.004,
    seed: int = 0,
) -> dict:
    """Rewrite ``source`` in HH's layout with planted empty responses and diverging transcripts.

    Args:
        source: a JSON Lines file of ``prompt``/``chosen``/``rejected`` strings.
        output: the ``.jsonl.gz`` to write.
        fault_rate: fraction of rows given an empty final response, and (other rows) a diverging transcript.
        seed: which rows get the faults.
    """
    rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    n_faults = max(1, round(fault_rate * len(rows)))
    faulty = rng.sample(range(len(rows)), 2 * n_faults)
    empty, diverging = set(faulty[:n_faults]), set(faulty[n_faults:])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(output, "wt", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            chosen = transcript(row["prompt"], row["chosen"])
            rejected = transcript(row["prompt"], "" if i in empty else row["rejected"])
            if i in diverging:  # an earlier exchange on one side only, as in HH's diverging rows
                rejected = transcript("Hi, can I ask you something?", "Of course.") + rejected
            f.write(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n")
    summary = {
        "output": output,
        "rows": len(rows),
        "empty_response_lines": sorted(i + 1 for i in empty),
        "diverging_lines": sorted(i + 1 for i in diverging),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    CLI(hh_layout, as_positional=False)
