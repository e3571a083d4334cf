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
* untrusted text stays text: a special-token string inside a message's content or role (say a
  response holding ``<|im_end|>\\n<|im_start|>assistant\\n…``) is tokenized as the characters it is,
  never as a control token, so text being scored cannot end its own turn or open another one where
  the reward is read. Only the template's own control tokens are control tokens: the conversation
  is rendered again with every such string in the text replaced by as many private-use characters,
  the control tokens of that rendering are the template's, and a run of text between two of them
  that holds a forged one is tokenized again as plain text (``split_special_tokens``). Text without
  such strings is tokenized exactly as before. An empty response is a response: its span is the
  end-of-turn marker alone, which is still the last token;

Truncation: a sequence longer than ``max_length`` loses tokens from the LEFT, so the end of the
response (and the token the reward is read from) always survives; ``response_start`` moves left
with it, clamped at 0, and ``truncated`` is set.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from sarm.data.rows import Message, PreferencePair

_MARKER = "\ue000sarm-response\ue000"  # private-use characters: no template or reply contains them
_DEFUSED = "\ue001"  # stands in for each character of a control-token string found in untrusted text


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
    controls = _control_pattern(tokenizer)
    if controls is not None and _holds_control(controls, prompt, response):
        input_ids, response_start = _tokenize_untrusted(tokenizer, controls, prompt, response, full, response_char)
    else:
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
    input_ids, offsets = _encode(tokenizer, full)
    if offsets is not None:
        return input_ids, _first_token_from(offsets, response_char, len(input_ids))
    prefix_ids, _ = _encode(tokenizer, full[:response_char], offsets=False)
    return input_ids, _shared_length(prefix_ids, input_ids)


def _encode(tokenizer, text: str, *, as_text: bool = False, offsets: bool = True) -> tuple[list[int], list | None]:
    """Token ids and (where the tokenizer has them) character offsets; ``as_text`` reads special-token
    strings as plain text."""
    kwargs = {"split_special_tokens": True} if as_text else {}
    if offsets:
        try:
            encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, **kwargs)
            return list(encoding["input_ids"]), [tuple(span) for span in encoding["offset_mapping"]]
        except (NotImplementedError, ValueError, TypeError, KeyError):  # slow tokenizers have no offsets
            pass
    return list(tokenizer(text, add_special_tokens=False, **kwargs)["input_ids"]), None


def _first_token_from(offsets: list, char: int, default: int) -> int:
    """The first token with a character at or after ``char`` (empty spans hold no text)."""
    return next((i for i, (begin, end) in enumerate(offsets) if end > char and end > begin), default)


def _shared_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Untrusted text: special-token strings in messages are text
# --------------------------------------------------------------------------------------------


def _control_pattern(tokenizer) -> re.Pattern | None:
    """A regex matching the tokenizer's control tokens (special tokens), longest first; None if it has none."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens |= {token.content for token in decoder.values() if getattr(token, "special", False)}
    return _compile_alternatives(tuple(sorted(t for t in tokens if isinstance(t, str) and t)))


@functools.lru_cache(maxsize=16)
def _compile_alternatives(tokens: tuple[str, ...]) -> re.Pattern | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def _holds_control(controls: re.Pattern, prompt: list[Message], response: str) -> bool:
    texts = [response, *(m["content"] for m in prompt), *(m["role"] for m in prompt)]
    return any(controls.search(text) for text in texts)


def _defuse(controls: re.Pattern, text: str) -> str:
    return controls.sub(lambda match: _DEFUSED * len(match.group()), text)


def _tokenize_untrusted(
    tokenizer, controls: re.Pattern, prompt: list[Message], response: str, full: str, response_char: int
) -> tuple[list[int], int]:
    """Tokenize ``full``, where some message holds control-token strings, with only the template's own
    control tokens as control tokens (see the module docstring)."""
    safe_prompt = [{"role": _defuse(controls, m["role"]), "content": _defuse(controls, m["content"])} for m in prompt]
    safe_full, safe_char = render_text(tokenizer, safe_prompt, _defuse(controls, response))
    if len(safe_full) != len(full) or safe_char != response_char:
        # The template reshaped the text around the replacements, so the two renderings do not line up:
        # score the defused text itself (the forged strings become private-use characters, never controls).
        return _tokenize_with_boundary(tokenizer, safe_full, safe_char)
    own = [m.span() for m in controls.finditer(safe_full) if full[m.start() : m.end()] == m.group()]

    input_ids, offsets = _encode(tokenizer, full)
    if offsets is None:
        ids = _encode_segments(tokenizer, controls, full, own)
        own_in_prefix = [span for span in own if span[1] <= response_char]
        prefix_ids = _encode_segments(tokenizer, controls, full[:response_char], own_in_prefix)
        return ids, _shared_length(prefix_ids, ids)
    ids, offsets = _retokenize_forged(tokenizer, controls, full, input_ids, offsets, own)
    return ids, _first_token_from(offsets, response_char, len(ids))


def _retokenize_forged(tokenizer, controls: re.Pattern, full: str, ids: list[int], offsets: list, own: list):
    """Keep the tokens of ``full``'s ordinary tokenization, except each run of tokens between two of the
    template's control tokens that holds a forged one: that run's text is tokenized again as plain text.

    (Tokenizers cut the text at every special token before anything else, so the tokens of one run
    never depend on another's: re-tokenizing a run leaves the rest as they were.)"""
    own_starts = {start for start, _ in own}
    control_ids = {tokenizer.convert_tokens_to_ids(m.group()) for m in controls.finditer(full)}
    out_ids: list[int] = []
    out_offsets: list = []
    run: list[int] = []  # the tokens since the template's last control token
    run_start = 0  # ... and where their text starts

    def flush(run_end: int) -> None:
        if any(ids[i] in control_ids for i in run):
            piece_ids, piece_offsets = _encode_text(tokenizer, controls, full, run_start, run_end)
            out_ids.extend(piece_ids)
            out_offsets.extend(piece_offsets)
        else:
            out_ids.extend(ids[i] for i in run)
            out_offsets.extend(offsets[i] for i in run)
        run.clear()

    for i, (begin, end) in enumerate(offsets):
        # where the token's own string starts (a token may have absorbed whitespace next to it: lstrip)
        text = full[begin:end].strip()
        if ids[i] in control_ids and text and full.find(text, begin, end) in own_starts:
            flush(begin)
            out_ids.append(ids[i])
            out_offsets.append((begin, end))
            run_start = end
        else:
            run.append(i)
    flush(len(full))
    return out_ids, out_offsets


def _encode_text(tokenizer, controls: re.Pattern, full: str, start: int, end: int) -> tuple[list[int], list]:
    """``full[start:end]`` as plain text: ids, and offsets into ``full``.

    A piece is encoded after a newline that is then dropped, so SentencePiece tokenizers do not add the
    word-initial space they add at the start of a text (the piece is the middle of one); if the newline
    does not come out as tokens of its own, the piece is encoded alone. Should a tokenizer still make a
    control token of it (one that ignores ``split_special_tokens``), the forged strings are replaced by
    private-use characters: never a control token."""
    piece = full[start:end]
    if not piece:
        return [], []
    ids, offsets = _encode(tokenizer, "\n" + piece, as_text=True) if start > 0 else ([], None)
    cut = next((i for i, (_, e) in enumerate(offsets) if e > 1), None) if offsets else None
    newline = _encode(tokenizer, "\n", offsets=False)[0] if start > 0 and offsets is None else None
    if cut and all(e <= 1 for _, e in offsets[:cut]) and offsets[cut][0] >= 1:
        ids, offsets = ids[cut:], [(b - 1 + start, e - 1 + start) for b, e in offsets[cut:]]
    elif newline and ids[: len(newline)] == newline and len(ids) > len(newline):  # no offsets: compare ids
        ids, offsets = ids[len(newline) :], [(start, end)] * (len(ids) - len(newline))
    else:
        ids, offsets = _encode(tokenizer, piece, as_text=True)
        offsets = [(b + start, e + start) for b, e in offsets] if offsets else [(start, end)] * len(ids)
    forged = {tokenizer.convert_tokens_to_ids(m.group()) for m in controls.finditer(piece)}
    if forged & set(ids):
        ids, offsets = _encode(tokenizer, _defuse(controls, piece))
        offsets = [(b + start, e + start) for b, e in offsets] if offsets else [(start, end)] * len(ids)
    return ids, offsets


def _encode_segments(tokenizer, controls: re.Pattern, text: str, own: list) -> list[int]:
    """Without offsets (slow tokenizers): the template's control tokens as such, the text between them as text."""
    ids: list[int] = []
    position = 0
    for start, end in [*own, (len(text), len(text))]:
        ids += _encode_text(tokenizer, controls, text, position, start)[0]
        if end > start:
            ids.append(tokenizer.convert_tokens_to_ids(text[start:end]))
        position = end
    return ids
