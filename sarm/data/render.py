"""Preference pairs → token ids, knowing where the final response starts.

A sequence is the prompt conversation with the response appended as the final assistant turn,
rendered with the tokenizer's chat template:

* the prefix is ``apply_chat_template(prompt, add_generation_prompt=True)``; the full text is
  ``apply_chat_template(prompt + [assistant response])``; the response span is what follows the
  prefix (end-of-turn marker included). Where the prompt is empty (transformers refuses to render
  an empty conversation) or the generation prompt is not a prefix of the full text (templates that
  render a finished assistant turn differently, e.g. without an empty think block), the response
  starts where the full text and a rendering with a marker as the reply stop agreeing;
* trailing whitespace of the full text is stripped, so the last token is the template's
  end-of-turn marker when it has one (``<|im_end|>`` for ChatML, not the newline after it): that
  last token is where a reward model reads;
* the full text is tokenized once, with ``add_special_tokens=False`` (templates already write
  their special tokens), and the fast tokenizer's offset mapping gives the first token holding a
  response character (a token straddling the boundary counts as response). Without offsets the
  prefix is tokenized on its own and its shared token prefix with the full sequence is the prompt;
* a tokenizer without a chat template gets a plain transcript, ``"User: …\\n\\nAssistant: …"``
  (roles capitalized, turns separated by a blank line), followed by the eos token if it has one.

Truncation: a sequence longer than ``max_length`` loses tokens from the LEFT, so the end of the
response (and the token the reward is read from) always survives; ``response_start`` moves left
with it, clamped at 0, and ``truncated`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sarm.data.preference import Message, PreferencePair

_MARKER = "\ue000sarm-response\ue000"  # private-use characters: no template or reply contains them


@dataclass
class RenderedSequence:
    input_ids: list[int]
    response_start: int  # first token of the final assistant response; tokens [response_start:] are it
    truncated: bool


def render_response(tokenizer, prompt: list[Message], response: str, max_length: int) -> RenderedSequence:
    """Render ``prompt`` + ``response`` (the final assistant turn) and locate the response's tokens."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    full, response_char = render_text(tokenizer, prompt, response)
    input_ids, response_start = _tokenize_with_boundary(tokenizer, full, response_char)

    if input_ids:  # the last token is always read as response, even for an empty response
        response_start = min(response_start, len(input_ids) - 1)
    truncated = len(input_ids) > max_length
    if truncated:
        dropped = len(input_ids) - max_length
        input_ids = input_ids[dropped:]
        response_start = max(0, response_start - dropped)
    return RenderedSequence(input_ids=input_ids, response_start=response_start, truncated=truncated)


def render_pair(tokenizer, pair: PreferencePair, max_length: int) -> tuple[RenderedSequence, RenderedSequence]:
    """The chosen and the rejected sequence of a pair."""
    return (
        render_response(tokenizer, pair.prompt, pair.chosen, max_length),
        render_response(tokenizer, pair.prompt, pair.rejected, max_length),
    )


def render_text(tokenizer, prompt: list[Message], response: str) -> tuple[str, int]:
    """The whole sequence as text (right-stripped) and the character index where the response starts."""
    if not getattr(tokenizer, "chat_template", None):
        turns = [f"{message['role'].capitalize()}: {message['content']}" for message in prompt]
        prefix = "\n\n".join([*turns, "Assistant: "])
        return (prefix + response + (tokenizer.eos_token or "")).rstrip(), len(prefix)

    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
    # transformers refuses to render an empty conversation, so an empty prompt has no prefix of its own
    prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) if prompt else None
    if prefix is None or not full.startswith(prefix):
        # The template renders the prompt differently once a reply follows (or there is no prompt):
        # render a marker as the reply instead; the texts agree up to where the reply goes.
        marked = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": _MARKER}], tokenize=False)
        prefix = full[: len(os.path.commonprefix([full, marked]))]
    return full.rstrip(), len(prefix)


def _tokenize_with_boundary(tokenizer, full: str, response_char: int) -> tuple[list[int], int]:
    try:
        encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError, KeyError):  # slow tokenizers have no offsets
        offsets = None
    if offsets is not None:
        input_ids = list(encoding["input_ids"])
        # the first token with a character at or after the boundary (empty spans hold no text)
        start = next(
            (i for i, (begin, end) in enumerate(offsets) if end > response_char and end > begin),
            len(input_ids),
        )
        return input_ids, start

    input_ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
    prefix_ids = tokenizer(full[:response_char], add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(prefix_ids), len(input_ids)) and prefix_ids[start] == input_ids[start]:
        start += 1
    return input_ids, start
