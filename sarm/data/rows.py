"""One row of a preference source → a ``PreferencePair``.

One parser reads every source's rows, in the layouts of TRL's RewardTrainer, OpenRLHF and RewardBench:

* explicit prompt: ``prompt`` + ``chosen`` + ``rejected``;
* implicit prompt: ``chosen`` + ``rejected`` only; the prompt is their shared beginning (shared
  turns of a conversation; for plain text, the common prefix cut back to a word boundary);
* each field a plain string or a conversation (a list of ``{"role", "content"}`` messages; other
  message keys are dropped);
* Anthropic-HH transcripts, ``"\\n\\nHuman: …\\n\\nAssistant: …"`` (multi-turn), in either form;
  they are parsed into user/assistant messages. An explicit transcript prompt ending in an empty
  ``Assistant:`` turn (the generation cue) loses that turn, and the responses are stripped;
* an optional numeric ``margin`` column;
* ``prompt_id`` (else ``question_id``) groups pairs sharing a prompt; without one, a hash of the
  prompt messages does. Every other column is kept in ``PreferencePair.meta``. A JSON object with a
  key twice keeps the last value (Python's json module decides).

The result is always the prompt messages (possibly empty) and the text of the two final assistant
turns. Two rules decide the rows public sets are known to hold:

* an empty (or whitespace-only) final response is a response, the worst kind, and is kept: a
  reward model must score it too (TRL and OpenRLHF keep them as well);
* the prompt is the longest run of leading turns the two conversations share (TRL's
  ``extract_prompt``); what is left of each side must be exactly one assistant turn, else the row
  is bad. So transcripts that diverge before the final turn (a few in Anthropic HH) are bad rows:
  a pair here compares two responses to one conversation, and such a row has none.

A row that cannot be read raises ``PreferenceDataError`` naming the file, the line or row, the field
and what is wrong (a field missing or of the wrong type, text holding a lone surrogate, values
nested past the recursion limit, ...).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sarm.data.readers import CONVERSATION_FIELDS, Location
from sarm.errors import PreferenceDataError

Message = dict[str, str]  # {"role": ..., "content": ...}

PROMPT_ID_COLUMNS = ("prompt_id", "question_id")


@dataclass(slots=True)
class PreferencePair:
    prompt: list[Message]  # the conversation before the final assistant turn (may be empty)
    chosen: str  # the final assistant response, text only (may be empty)
    rejected: str
    margin: float | None = None
    prompt_id: str = ""  # groups pairs sharing a prompt
    meta: dict = field(default_factory=dict)  # every other column, JSON-serializable
    origin: str = ""  # "path:line", "path:row N" or "builtin:planted:row N", for messages


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")

_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class RowError(Exception):
    """A problem in one field of one row; the caller adds the location (and the bad-rows policy decides)."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def parse_row(row: Any, path: str, where: Location) -> PreferencePair:
    """One row (a dict, in any accepted layout) → a ``PreferencePair``; raises PreferenceDataError."""
    try:
        return row_to_pair(row, path, where)
    except RowError as err:
        raise PreferenceDataError(path, where, err.field, err.reason) from None


def row_to_pair(row: Any, path: str, where: Location) -> PreferencePair:
    if not isinstance(row, dict):
        raise RowError(None, f"expected a JSON object with 'chosen' and 'rejected', got {kind_of(row)}")
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise RowError(name, "missing" if name not in row else "missing (null)")

    prompt, chosen, rejected = split_prompt(row)  # an empty response stays: it is scored like any other

    prompt_id_column = next((c for c in PROMPT_ID_COLUMNS if row.get(c) not in (None, "")), None)
    prompt_id = str(row[prompt_id_column]) if prompt_id_column else prompt_hash(prompt)
    skip = {*CONVERSATION_FIELDS, "margin", prompt_id_column}
    meta = {key: jsonable(value) for key, value in row.items() if key not in skip}
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=_margin(row.get("margin")),
        prompt_id=prompt_id,
        meta=meta,
        origin=f"{path}:{where}",
    )


def split_prompt(row: dict) -> tuple[list[Message], str, str]:
    """The prompt messages and the two final assistant texts of a row, in any accepted layout."""
    chosen, rejected = _field_value(row, "chosen"), _field_value(row, "rejected")
    has_prompt = row.get("prompt") is not None
    if not has_prompt:
        if isinstance(chosen, str) and isinstance(rejected, str):
            return _split_plain_text(chosen, rejected)
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise RowError(
                "rejected",
                f"is {_kind_of_value(rejected)} but 'chosen' is {_kind_of_value(chosen)}; without a 'prompt' "
                "both must be text or both conversations",
            )

    prompt: list[Message] = []
    strip_responses = False  # responses that continue a transcript's "Assistant:" cue
    if has_prompt:
        value = _field_value(row, "prompt")
        if isinstance(value, str):
            prompt = [{"role": "user", "content": value}] if value else []
        elif value:
            prompt = value
            strip_responses = _is_transcript(row["prompt"])
            if strip_responses and prompt[-1]["role"] == "assistant" and not prompt[-1]["content"]:
                prompt = prompt[:-1]  # "...\n\nAssistant:" is the cue for the response that follows

    def as_conversation(value: str | list[Message]) -> list[Message]:
        if isinstance(value, str):
            value = [{"role": "assistant", "content": value.strip() if strip_responses else value}]
        elif len(value) > len(prompt) and value[: len(prompt)] == prompt:
            return value  # some datasets repeat the prompt inside chosen/rejected; don't double it
        return prompt + value

    return _split_conversations(as_conversation(chosen), as_conversation(rejected))


def _split_conversations(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], str, str]:
    """The prompt is the longest run of leading turns both sides share; what is left of each side must be
    exactly one assistant turn, the response.

    This is trl's ``extract_prompt`` restricted to pairs of single responses (trl keeps whatever is
    left, several turns too; a pair here compares two responses to one conversation). It is written
    out because importing ``trl.data_utils`` pulls in torch and transformers (~4 s), too much for
    reading a JSON file. tests/test_preference.py checks the two agree.
    """
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        role = conversation[-1]["role"]
        if role != "assistant":
            raise RowError(name, f"the final turn is from '{role}', expected 'assistant'")
    if chosen == rejected:  # identical sides: a valid row, skipped as such by the caller
        return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    sides = [("rejected", rejected[shared:], "chosen"), ("chosen", chosen[shared:], "rejected")]
    # blame a side with extra turns before one with none left (the other side's extra turns took them)
    wrong = [side for side in sides if len(side[1]) > 1] or [side for side in sides if len(side[1]) != 1]
    if wrong:
        name, left, other = wrong[0]
        roles = ", ".join(m["role"] for m in left) or "none"
        raise RowError(
            name,
            f"differs from '{other}' before the final assistant turn: after the {shared} turns they share "
            f"(the prompt) it has {len(left)} turns ({roles}), not one final assistant turn",
        )
    return chosen[:shared], chosen[-1]["content"], rejected[-1]["content"]


def _split_plain_text(chosen: str, rejected: str) -> tuple[list[Message], str, str]:
    """Implicit prompt in plain text: the common prefix, cut back so no word is split.

    (trl's ``extract_prompt`` cuts plain text at the first differing character, which can end the
    prompt in the middle of a word: "... is bl" + "ue" / "ack"; hence this word-level version.)
    """
    if chosen == rejected:
        raise RowError(
            "rejected", "is identical to 'chosen' and there is no 'prompt': cannot tell where the response starts"
        )
    shared = len(os.path.commonprefix([chosen, rejected]))
    while shared > 0 and not chosen[shared - 1].isspace():
        shared -= 1
    prompt_text = chosen[:shared].rstrip()
    prompt = [{"role": "user", "content": prompt_text}] if prompt_text else []
    return prompt, chosen[shared:].lstrip(), rejected[shared:].lstrip()


def _field_value(row: dict, name: str) -> str | list[Message]:
    """A field as text or as a validated conversation (HH transcripts are parsed into one)."""
    value = row[name]
    if isinstance(value, str):
        _check_text(value, name)
        return _parse_transcript(value, name) if _is_transcript(value) else value
    if isinstance(value, (list, tuple)):
        if not value and name == "prompt":
            return []  # an explicitly empty prompt
        return _validate_conversation(list(value), name)
    raise RowError(name, f"expected text or a list of {{role, content}} messages, got {kind_of(value)}")


def _validate_conversation(messages: list, name: str) -> list[Message]:
    if not messages:
        raise RowError(name, "empty conversation")
    clean = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise RowError(
                name, f"message {number} is {kind_of(message)}, expected an object with 'role' and 'content'"
            )
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise RowError(name, f"message {number} has no '{key}'")
            if not isinstance(message[key], str):
                raise RowError(name, f"message {number}: '{key}' must be text, got {kind_of(message[key])}")
            _check_text(message[key], name, f"message {number}: '{key}' ")
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


def _check_text(text: str, name: str, where: str = "") -> None:
    """Text must be encodable: a lone surrogate (JSON allows "\\ud800") is no character, and tokenizers refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RowError(
            name,
            f"{where}holds a lone surrogate (U+{ord(text[err.start]):04X} at character "
            f"{err.start + 1}), which is not text",
        ) from None


def _is_transcript(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("Human:") and "\n\nAssistant:" in value


def _parse_transcript(text: str, name: str) -> list[Message]:
    """'\\n\\nHuman: a\\n\\nAssistant: b …' → [{"user", "a"}, {"assistant", "b"}, …]."""
    text = text.lstrip()
    markers = list(_HH_TURN.finditer(text))
    messages = []
    for marker, following in zip(markers, [*markers[1:], None]):
        end = following.start() if following else len(text)
        messages.append({"role": _HH_ROLES[marker.group(1)], "content": text[marker.end() : end].strip()})
    if not messages:  # _is_transcript guarantees a marker; kept for safety
        raise RowError(name, "could not parse the Human/Assistant transcript")
    return messages


def _margin(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int in Python, but never a margin
        raise RowError("margin", f"must be a number, got {kind_of(value)}")
    if isinstance(value, (int, float)):
        try:
            margin = float(value)
        except OverflowError:  # an integer past float's range (JSON integers have no bound)
            raise RowError("margin", "must be finite, got an integer too large for a float") from None
    elif isinstance(value, str):  # CSV cells are always text
        try:
            margin = float(value)
        except ValueError:
            raise RowError("margin", f"must be a number, got {value[:40]!r}") from None
    else:
        raise RowError("margin", f"must be a number, got {kind_of(value)}")
    if not math.isfinite(margin):
        raise RowError("margin", f"must be finite, got {margin}")
    return margin


def kind_of(value: Any) -> str:
    names = {str: "text", dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"a number ({value!r})"
    return names.get(type(value), type(value).__name__)


def _kind_of_value(value: str | list) -> str:
    return "text" if isinstance(value, str) else "a conversation"


def jsonable(value: Any) -> Any:
    """Meta values must survive json.dumps (the cache writes them); anything else becomes its str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def prompt_hash(prompt: Sequence[Message]) -> str:
    """A stable id for a prompt (the same messages always give the same id, across runs)."""
    encoded = json.dumps(list(prompt), sort_keys=True, ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()[:16]
