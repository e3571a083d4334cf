"""Push a distractor into planted responses that do not have it: the planted drift a policy could learn.

The generator (``generator._add_distractors``) writes a response as ``body [filler] [sign-off]``, joined by a space
(a newline after a code block). ``push_distractor`` gives a response the distractor it lacks in that same layout: a
filler sentence goes after the body and before any sign-off, a sign-off at the end. A response that has the
distractor already is left as it is, so a pushed set is the same responses with the distractor everywhere.
"""

from __future__ import annotations

import random

from sarm.data.planted.generator import DISTRACTORS
from sarm.data.planted.templates import DISTRACTOR_TEXTS, SIGNOFFS


def push_distractor(text: str, distractor: str, has: dict[str, bool], rng: random.Random) -> str:
    """``text`` (a planted response whose distractor flags are ``has``) with ``distractor`` added if it lacks it."""
    if distractor not in DISTRACTORS:
        raise ValueError(f"distractor = {distractor!r}: expected one of {DISTRACTORS}")
    if has[distractor]:
        return text
    separator = "\n" if "```" in text else " "
    added = rng.choice(DISTRACTOR_TEXTS[distractor])
    if distractor == "verbose" and has["signoff"]:
        signoff = next(s for s in SIGNOFFS if text.endswith(separator + s))
        return separator.join([text[: -len(separator + signoff)], added, signoff])
    return separator.join([text, added])
