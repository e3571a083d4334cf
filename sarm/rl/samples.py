"""A prompt and a completion as an RL trainer or a reranking file holds them → the prompt conversation and the
response text ``RewardModel.score`` reads.

The two forms are TRL's (``trl.data_utils.is_conversational``):

* plain text: ``prompt`` a string, ``completion`` a string. The prompt is one user turn (or, when it is a
  ``\\n\\nHuman: … \\n\\nAssistant:`` transcript, its turns), the completion the assistant's reply;
* conversational: ``prompt`` a list of ``{role, content}`` messages, ``completion`` a list holding the assistant
  message (TRL's ``[{"role": "assistant", "content": ...}]``), or a plain string.

Both are read by the one row parser (``sarm.data.rows.split_prompt``), so a sample is rendered exactly as
``sarm score`` and ``sarm serve`` render the same prompt and response: with the reward model's own chat template.
"""

from __future__ import annotations

from typing import Any

from sarm.data.responses import split_sample
from sarm.data.rows import Message


def prompt_and_response(prompt: Any, completion: Any) -> tuple[list[Message], str]:
    """``(prompt messages, response text)`` of one sample; a field that cannot be read raises ``RowError`` naming
    it (``prompt``, or ``completion`` for the response)."""
    if isinstance(completion, dict):  # one message rather than a list of them
        completion = [completion]
    return split_sample(prompt, completion, "completion")
