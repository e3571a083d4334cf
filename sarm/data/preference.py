"""Preference pairs from the files, directories, builtin sets and hub datasets that users already have.

``load_preferences(source)`` reads what ``sarm.data.readers`` reads: ``.jsonl`` / ``.ndjson`` /
``.json`` / ``.csv`` / ``.parquet`` files, the first four also gzip-compressed (``.jsonl.gz``, ...),
``datasets`` ``save_to_disk`` directories (split ``hf_split`` of a DatasetDict), ``builtin:planted``
and Hugging Face hub datasets.

Every source goes through one row parser, which accepts the layouts of TRL's RewardTrainer,
OpenRLHF and RewardBench:

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

Bad rows (a field missing or of the wrong type, a line that is not JSON or not UTF-8, text holding
a lone surrogate, values nested past the recursion limit, ...) follow the ``bad_rows`` policy:

* ``"error"`` (the default): the whole source is still read, so one run reports every bad row; then
  ``BadRowsError`` (a ``PreferenceDataError``) is raised. Its first line is the first bad row,
  ``<file>:<line or row N>: field '<name>': <reason>``; up to ten more follow, one a line, then the
  total. No pair is handed out after the first bad row (it would be thrown away);
* ``"skip"``: bad rows are left out, each recorded, with the count printed to stderr.

Two kinds of valid rows are always skipped, counted and recorded the same way: pairs whose chosen
and rejected responses are identical (no preference), and exact repeats of an earlier row (every
column equal). Problems with the source as a whole (missing, unknown type, corrupt gzip, a JSON
document that does not parse) raise at once under either policy, and so does a source with no
pair left.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sarm.data.readers import (  # noqa: F401 (re-exported: callers import these from here)
    BUILTIN_PREFIX,
    BUILTIN_SETS,
    CONVERSATION_FIELDS,
    FILE_SUFFIXES,
    JSONL_SUFFIXES,
    BadRow,
    Location,
    is_path_source,
    read_rows,
    source_files,
)
from sarm.errors import BadRowsError, PreferenceDataError, SarmInputError

Message = dict[str, str]  # {"role": ..., "content": ...}

PROMPT_ID_COLUMNS = ("prompt_id", "question_id")
BAD_ROW_POLICIES = ("error", "skip")
SKIP_HINT = "pass --bad_rows skip to leave bad rows out (each is listed in skipped_rows.jsonl)"
SHOWN_LOCATIONS = 5  # skip counts on stderr name this many lines/rows


@dataclass(slots=True)
class PreferencePair:
    prompt: list[Message]  # the conversation before the final assistant turn (may be empty)
    chosen: str  # the final assistant response, text only (may be empty)
    rejected: str
    margin: float | None = None
    prompt_id: str = ""  # groups pairs sharing a prompt
    meta: dict = field(default_factory=dict)  # every other column, JSON-serializable
    origin: str = ""  # "path:line", "path:row N" or "builtin:planted:row N", for messages


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def load_preferences(source: str | os.PathLike, **options) -> list[PreferencePair]:
    """Every pair ``iter_preferences(source, **options)`` yields, as a list."""
    return list(iter_preferences(source, **options))


def iter_preferences(
    source: str | os.PathLike,
    *,
    num_pairs: int = 2000,
    seed: int = 0,
    hf_split: str = "train",
    bad_rows: Literal["error", "skip"] = "error",
    skipped: list[dict] | None = None,
) -> Iterator[PreferencePair]:
    """Every preference pair of ``source``, one at a time (see the module docstring for what is accepted);
    skip counts are printed, and bad rows raised, once the source is exhausted.

    Args:
        source: a data file, a ``save_to_disk`` directory, ``builtin:planted``, or a hub dataset name.
        num_pairs: pairs to generate, for ``builtin:planted`` only.
        seed: generator seed, for ``builtin:planted`` only.
        hf_split: split to load, for a hub dataset or a saved DatasetDict only.
        bad_rows: ``"error"``: report every bad row, then raise; ``"skip"``: leave them out.
        skipped: if given, a dict is appended for every row left out (bad, identical or repeated):
            ``{"origin": "path:line", "field": name or None, "reason": text, "row": the row as JSON}``.

    Raises:
        BadRowsError: ``bad_rows="error"`` and some rows are bad (all of them are counted).
        PreferenceDataError: the source cannot be found or read, or has no pair left.
    """
    if bad_rows not in BAD_ROW_POLICIES:
        raise SarmInputError(f"bad_rows = {bad_rows!r}: expected one of {', '.join(map(repr, BAD_ROW_POLICIES))}")
    name = os.fspath(source)
    log = _LeftOut(name, bad_rows, skipped)
    count, seen = 0, {}
    for where, row in read_rows(name, num_pairs, seed, hf_split):
        try:
            pair = _parse_any(row, name, where)
        except _RowError as err:
            log.bad(where, err.field, err.reason, row.raw if isinstance(row, BadRow) else row)
            continue
        if log.failing:
            continue  # the source will be refused: only look for more bad rows
        # A digest, not the text: memory per pair stays small on large datasets.
        key = hashlib.blake2b(
            json.dumps(
                [pair.prompt, pair.chosen, pair.rejected, pair.prompt_id, pair.margin, pair.meta], sort_keys=True
            ).encode(),
            digest_size=16,
        ).digest()
        if pair.chosen == pair.rejected:
            # no preference to learn from, and accuracy would count it wrong
            log.skip("identical", where, "chosen and rejected responses are identical", row)
        elif key in seen:
            # the same row twice would only weigh it double
            log.skip("repeat", where, f"repeats the pair at {_place(seen[key])}", row)
        else:
            seen[key] = where
            count += 1
            yield pair
    log.finish()
    if not count:
        raise PreferenceDataError(name, None, None, "holds no preference pairs" + log.why_empty())


def _parse_any(row: Any, path: str, where: Location) -> PreferencePair:
    """A row, or the BadRow a reader yielded in its place, as a pair; raises _RowError."""
    if isinstance(row, BadRow):
        raise _RowError(None, row.reason)
    try:
        return _parse_row(row, path, where)
    except RecursionError:  # a value nested thousands deep
        raise _RowError(None, "nested too deeply to read") from None


def _place(where: Location) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


class _LeftOut:
    """The rows left out of one source: bad rows (raised or skipped, by policy) and valid rows skipped by rule.

    Each is appended to ``skipped`` if given; counts and the first few locations of each kind are kept
    for the stderr summary, and the first bad rows for the error message (never every row's text)."""

    KINDS = {  # kind → how the stderr summary describes it
        "bad": "bad rows",
        "identical": "rows whose chosen and rejected responses are identical",
        "repeat": "rows repeating an earlier pair",
    }

    def __init__(self, name: str, policy: str, skipped: list[dict] | None):
        self.name, self.policy, self.skipped = name, policy, skipped
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.locations: dict[str, list[Location]] = {kind: [] for kind in self.KINDS}
        self.first_bad: list[tuple[Location, str | None, str]] = []  # for the error message

    @property
    def failing(self) -> bool:
        return self.policy == "error" and self.counts["bad"] > 0

    def bad(self, where: Location, field_name: str | None, reason: str, row: Any) -> None:
        if len(self.first_bad) <= BadRowsError.SHOWN:
            self.first_bad.append((where, field_name, reason))
        if self.policy == "error":
            self.counts["bad"] += 1  # nothing is skipped: the rows are only counted for the message
        else:
            self._record("bad", where, field_name, reason, row)

    def skip(self, kind: str, where: Location, reason: str, row: Any) -> None:
        self._record(kind, where, None, reason, row)

    def _record(self, kind: str, where: Location, field_name: str | None, reason: str, row: Any) -> None:
        self.counts[kind] += 1
        if len(self.locations[kind]) < SHOWN_LOCATIONS + 1:  # one more than shown, to know to write "..."
            self.locations[kind].append(where)
        if self.skipped is not None:
            self.skipped.append(
                {"origin": f"{self.name}:{where}", "field": field_name, "reason": reason, "row": _jsonable(row)}
            )

    def finish(self) -> None:
        """Raise BadRowsError under the "error" policy if any row was bad; else print the skip counts."""
        if self.failing:
            raise BadRowsError(self.name, self.first_bad, self.counts["bad"], SKIP_HINT)
        for kind, what in self.KINDS.items():
            if self.counts[kind]:
                shown = self.locations[kind][:SHOWN_LOCATIONS]
                more = ", ..." if self.counts[kind] > SHOWN_LOCATIONS else ""
                places = ", ".join(map(str, shown)) + more
                line = f"sarm: {self.name}: skipped {self.counts[kind]} {what} (lines/rows {places})"
                if kind == "bad":
                    line += "; the first: " + PreferenceDataError.describe(self.name, *self.first_bad[0])
                print(line, file=sys.stderr)

    def why_empty(self) -> str:
        total = sum(self.counts.values())
        return f" ({total} rows were skipped)" if total else ""


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class _RowError(Exception):
    """A problem in one field of one row; the caller adds the location (and the bad-rows policy decides)."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def parse_row(row: Any, path: str, where: Location) -> PreferencePair:
    """One row (a dict, in any accepted layout) → a ``PreferencePair``; raises PreferenceDataError."""
    try:
        return _parse_row(row, path, where)
    except _RowError as err:
        raise PreferenceDataError(path, where, err.field, err.reason) from None


def _parse_row(row: Any, path: str, where: Location) -> PreferencePair:
    if not isinstance(row, dict):
        raise _RowError(None, f"expected a JSON object with 'chosen' and 'rejected', got {_kind(row)}")
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise _RowError(name, "missing" if name not in row else "missing (null)")

    prompt, chosen, rejected = _split_prompt(row)  # an empty response stays: it is scored like any other

    prompt_id_column = next((c for c in PROMPT_ID_COLUMNS if row.get(c) not in (None, "")), None)
    prompt_id = str(row[prompt_id_column]) if prompt_id_column else prompt_hash(prompt)
    skip = {*CONVERSATION_FIELDS, "margin", prompt_id_column}
    meta = {key: _jsonable(value) for key, value in row.items() if key not in skip}
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=_margin(row.get("margin")),
        prompt_id=prompt_id,
        meta=meta,
        origin=f"{path}:{where}",
    )


@dataclass
class ResponseRow:
    """A prompt and one final assistant response to score."""

    prompt: list[Message]
    response: str
    meta: dict = field(default_factory=dict)
    origin: str = ""


def is_response_data(source: str | os.PathLike) -> bool:
    """Whether a file holds single responses (a ``response`` column) rather than preference pairs."""
    for _, row in read_rows(os.fspath(source), 0, 0, "train"):
        return isinstance(row, dict) and "response" in row and "chosen" not in row
    return False


def load_responses(source: str | os.PathLike) -> list[ResponseRow]:
    """Rows of ``prompt`` (text, conversation or absent) + ``response`` (text, possibly empty); other columns
    go to meta.

    Raises:
        BadRowsError: naming every bad row (the first ten, then the count), after reading the whole file.
    """
    name = os.fspath(source)
    rows, log = [], _LeftOut(name, "error", None)
    for where, row in read_rows(name, 0, 0, "train"):
        try:
            if isinstance(row, BadRow):
                raise _RowError(None, row.reason)
            rows.append(_response_row(row, f"{name}:{where}"))
        except _RowError as err:
            log.bad(where, err.field, err.reason, row)
    if log.failing:
        raise BadRowsError(name, log.first_bad, log.counts["bad"], "")
    return rows


def _response_row(row: Any, origin: str) -> ResponseRow:
    if not isinstance(row, dict):
        raise _RowError(None, f"expected a JSON object with 'response', got {_kind(row)}")
    response = row.get("response")
    if not isinstance(response, str):
        raise _RowError("response", "missing" if response is None else f"expected text, got {_kind(response)}")
    prompt = row.get("prompt")
    try:  # the pair parser reads the prompt in every accepted layout
        prompt, text, _ = _split_prompt(
            {"prompt": "" if prompt is None else prompt, "chosen": response, "rejected": response}
        )
    except _RowError as err:
        raise _RowError("response" if err.field in ("chosen", "rejected") else err.field, err.reason) from None
    except RecursionError:
        raise _RowError("prompt", "nested too deeply to read") from None
    meta = {k: _jsonable(v) for k, v in row.items() if k not in ("prompt", "response")}
    return ResponseRow(prompt, text, meta, origin)


def _split_prompt(row: dict) -> tuple[list[Message], str, str]:
    """The prompt messages and the two final assistant texts of a row, in any accepted layout."""
    chosen, rejected = _field_value(row, "chosen"), _field_value(row, "rejected")
    has_prompt = row.get("prompt") is not None
    if not has_prompt:
        if isinstance(chosen, str) and isinstance(rejected, str):
            return _split_plain_text(chosen, rejected)
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise _RowError(
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
            raise _RowError(name, f"the final turn is from '{role}', expected 'assistant'")
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
        raise _RowError(
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
        raise _RowError(
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
    raise _RowError(name, f"expected text or a list of {{role, content}} messages, got {_kind(value)}")


def _validate_conversation(messages: list, name: str) -> list[Message]:
    if not messages:
        raise _RowError(name, "empty conversation")
    clean = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise _RowError(name, f"message {number} is {_kind(message)}, expected an object with 'role' and 'content'")
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise _RowError(name, f"message {number} has no '{key}'")
            if not isinstance(message[key], str):
                raise _RowError(name, f"message {number}: '{key}' must be text, got {_kind(message[key])}")
            _check_text(message[key], name, f"message {number}: '{key}' ")
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


def _check_text(text: str, name: str, where: str = "") -> None:
    """Text must be encodable: a lone surrogate (JSON allows "\\ud800") is no character, and tokenizers refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _RowError(
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
        raise _RowError(name, "could not parse the Human/Assistant transcript")
    return messages


def _margin(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int in Python, but never a margin
        raise _RowError("margin", f"must be a number, got {_kind(value)}")
    if isinstance(value, (int, float)):
        try:
            margin = float(value)
        except OverflowError:  # an integer past float's range (JSON integers have no bound)
            raise _RowError("margin", "must be finite, got an integer too large for a float") from None
    elif isinstance(value, str):  # CSV cells are always text
        try:
            margin = float(value)
        except ValueError:
            raise _RowError("margin", f"must be a number, got {value[:40]!r}") from None
    else:
        raise _RowError("margin", f"must be a number, got {_kind(value)}")
    if not math.isfinite(margin):
        raise _RowError("margin", f"must be finite, got {margin}")
    return margin


def _kind(value: Any) -> str:
    names = {str: "text", dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"a number ({value!r})"
    return names.get(type(value), type(value).__name__)


def _kind_of_value(value: str | list) -> str:
    return "text" if isinstance(value, str) else "a conversation"


def _jsonable(value: Any) -> Any:
    """Meta values must survive json.dumps (the cache writes them); anything else becomes its str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def prompt_hash(prompt: Sequence[Message]) -> str:
    """A stable id for a prompt (the same messages always give the same id, across runs)."""
    encoded = json.dumps(list(prompt), sort_keys=True, ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()[:16]
