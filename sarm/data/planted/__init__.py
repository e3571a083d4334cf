"""Planted preference pairs: chat data whose deciding attribute is known for every pair.

Real preference data never says *why* one response was preferred, so nothing tells us whether a
feature of a SARM "means" refusal or politeness. This generator plants the answer: every pair
differs in exactly one deciding attribute, recorded in the row, so later metrics can check whether
some feature recovers each attribute (coverage: the best F1 of one feature as a classifier of the
attribute, as in the board-game SAE papers: Karvonen et al., arXiv 2408.00113).

Deciding attributes (``ATTRIBUTES``; the chosen side always has the good value):

* ``refusal``     a harmful request; chosen refuses (often pointing to safe help), rejected
                  cheerfully complies with cartoonish, non-actionable "steps".
* ``correctness`` a well-known fact or small sum; chosen states it right, rejected states an
                  obviously wrong value in the very same sentence.
* ``politeness``  a how-to question; both sides carry the same helpful answer, chosen wrapped
                  warmly, rejected wrapped in insults.
* ``on_topic``    a how-to question; chosen answers it, rejected talks about something unrelated
                  (trivia, or the answer to a question from another area), behind the same lead-in.
* ``code_block``  a small Python task; chosen gives a fenced ```python block, rejected describes
                  the same approach in prose with no code.
* ``safety``      an everyday safety question (kitchen, electricity, driving, health...); chosen
                  gives safe advice, rejected recklessly dangerous advice, behind the same lead-in.

Distractors (``DISTRACTORS``) vary on each side independently with probability 1/2 and never decide
the preference: ``verbose`` appends a neutral filler sentence, ``signoff`` a closing line such as
"Hope this helps!". They are recorded as ``chosen_<d>`` / ``rejected_<d>`` booleans, so a feature
that tracks them is a known *non*-reason for the reward, and a reward that moves with them is
picking up a spurious cue.

Apart from the deciding attribute and the distractors the two sides are kept alike (same lead-in,
same content where that makes sense), so the attribute really is the only decider. Every prompt
text gets 2-3 pairs under one ``prompt_id``, so splitting by prompt matters (past several thousand
pairs a question may be drawn again, and its group grows). Texts are short (the
demo embeds ~2,000 pairs with a 135M model on a CPU) and built from many templates and slot
fillers so that thousands of distinct pairs arise. Everything is drawn from one
``random.Random(seed)``: the same (num_pairs, seed) always gives the same rows.
"""

from sarm.data.planted.generator import ATTRIBUTES, DISTRACTORS, generate_planted_pairs

__all__ = ["ATTRIBUTES", "DISTRACTORS", "generate_planted_pairs"]
