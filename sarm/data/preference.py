"""Preference pairs from the files, builtin sets and hub datasets that users already have.

``load_preferences(source)`` reads

* a file, by extension: ``.jsonl`` / ``.ndjson`` (one JSON object per line, read line by line;
  blank lines are skipped), ``.json`` (a list of objects, or an object holding one such list, e.g.
  ``{"data": [...]}``; a ``.json`` file that is really JSON Lines is read as such), ``.parquet``
  (read in record batches) or ``.csv`` (a header row; an empty cell reads as null, but an empty
  response is an error; a ``prompt``/``chosen``/``rejected`` cell may hold a conversation as a
  JSON string);
* ``builtin:planted``, the synthetic pairs of ``sarm.data.planted`` (``num_pairs``, ``seed``);
* anything else that is not an existing path: a Hugging Face hub dataset, ``load_dataset(name,
  split=hf_split)``.

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
  prompt messages does. Every other column is kept in ``PreferencePair.meta``.

The result is always the prompt messages (possibly empty) and the text of the two final assistant
turns. A row that cannot be read raises ``PreferenceDataError`` naming the file, the line (JSON
Lines, and JSON-syntax or UTF-8 errors) or ``row N`` (JSON, Parquet, CSV, builtin, hub), the field
and what is wrong; bad rows are never skipped silently. Two kinds of valid rows are skipped, with
their count and first locations printed: pairs whose chosen and rejected responses are identical
(no preference), and exact repeats of an earlier row (every column equal). A source with no pair left is an error.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarm.errors import PreferenceDataError, SarmInputError

Message = dict[str, str]  # {"role": ..., "content": ...}

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("planted",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
FILE_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet", ".csv")
CONVERSATION_FIELDS = ("prompt", "chosen", "rejected")
PROMPT_ID_COLUMNS = ("prompt_id", "question_id")

Location = int | str  # a 1-based file line, or "row N" for sources numbered by row


@dataclass(slots=True)
class PreferencePair:
    prompt: list[Message]  # the conversation before the final assistant turn (may be empty)
    chosen: str  # the final assistant response, text only
    rejected: str
    margin: float | None = None
    prompt_id: str = ""  # groups pairs sharing a prompt
    meta: dict = field(default_factory=dict)  # every other column, JSON-serializable
    origin: str = ""  # "path:line", "path:row N" or "builtin:planted:row N", for messages


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def load_preferences(
    source: str | os.PathLike, *, num_pairs: int = 2000, seed: int = 0, hf_split: str = "train"
) -> list[PreferencePair]:
    """Read every preference pair of ``source`` (see the module docstring for what is accepted).

    Args:
        source: a .jsonl/.json/.parquet/.csv file, ``builtin:planted``, or a hub dataset name.
        num_pairs: pairs to generate, for ``builtin:planted`` only.
        seed: generator seed, for ``builtin:planted`` only.
        hf_split: split to load, for a hub dataset only.

    Raises:
        PreferenceDataError: the source cannot be found or read, or one of its rows is invalid.
    """
    return list(iter_preferences(source, num_pairs=num_pairs, seed=seed, hf_split=hf_split))


def iter_preferences(
    source: str | os.PathLike, *, num_pairs: int = 2000, seed: int = 0, hf_split: str = "train"
) -> Iterator[PreferencePair]:
    """``load_preferences`` one pair at a time, for readers that keep pairs in a compact form of
    their own. Skips (identical sides, repeated rows) are reported once the source is exhausted."""
    name = os.fspath(source)
    count, identical, duplicates, seen = 0, [], [], set()
    for where, row in _read_rows(name, num_pairs, seed, hf_split):
        pair = parse_row(row, name, where)
        # A digest, not the text: memory per pair stays small on large datasets.
        key = hashlib.blake2b(json.dumps([pair.prompt, pair.chosen, pair.rejected, pair.prompt_id, pair.margin,
                                          pair.meta], sort_keys=True).encode(), digest_size=16).digest()
        if pair.chosen == pair.rejected:
            identical.append(where)  # no preference to learn from, and accuracy would count it wrong
        elif key in seen:
            duplicates.append(where)  # the same row twice would only weigh it double
        else:
            seen.add(key)
            count += 1
            yield pair
    for skipped, what in ((identical, "whose chosen and rejected responses are identical"),
                          (duplicates, "repeating an earlier pair")):
        if skipped:
            shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
            print(f"sarm: {name}: skipped {len(skipped)} rows {what} (lines/rows {shown})", file=sys.stderr)
    if not count:
        raise PreferenceDataError(name, None, None, "holds no preference pairs")


def _read_rows(name: str, num_pairs: int, seed: int, hf_split: str) -> Iterator[tuple[Location, Any]]:
    if name.startswith(BUILTIN_PREFIX):
        yield from _builtin_rows(name, num_pairs, seed)
        return
    path = Path(name)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            yield from _jsonl_rows(path)
        elif suffix == ".json":
            yield from _json_rows(path)
        elif suffix == ".parquet":
            yield from _parquet_rows(path)
        elif suffix == ".csv":
            yield from _csv_rows(path)
        else:
            raise PreferenceDataError(
                name, None, None, f"unknown file type '{path.suffix}'; expected one of {', '.join(FILE_SUFFIXES)}"
            )
        return
    if path.exists():
        raise PreferenceDataError(name, None, None, "is not a file")
    if path.suffix.lower() in FILE_SUFFIXES:  # clearly meant as a file: don't ask the hub about it
        raise PreferenceDataError(name, None, None, "no such file")
    yield from _hub_rows(name, hf_split)


def _builtin_rows(name: str, num_pairs: int, seed: int) -> Iterator[tuple[Location, Any]]:
    if name != "builtin:planted":
        available = ", ".join(BUILTIN_PREFIX + s for s in BUILTIN_SETS)
        raise PreferenceDataError(name, None, None, f"unknown builtin dataset; available: {available}")
    from sarm.data.planted import generate_planted_pairs  # lazy: only this source needs it

    rows = generate_planted_pairs(num_pairs, seed)
    rows.reverse()
    number = 0
    while rows:  # hand each row over and let it go: the rows and the parsed pairs never both grow whole
        number += 1
        yield f"row {number}", rows.pop()


def _decode_line(raw: bytes, path: Path, line: int) -> str:
    try:
        # utf-8-sig on the first line drops a byte-order mark that some editors write
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise PreferenceDataError(
            str(path), line, None, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line)"
        ) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[Location, Any]]:
    with open(path, "rb") as f:  # bytes, so a bad UTF-8 sequence can be pinned to its line
        for number, raw in enumerate(f, start=1):
            text = _decode_line(raw, path, number)
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                raise PreferenceDataError(str(path), number, None, f"invalid JSON: {err}") from None


def _json_rows(path: Path) -> Iterator[tuple[Location, Any]]:
    data = path.read_bytes()  # a JSON document cannot be parsed piecewise; JSON Lines can
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PreferenceDataError(str(path), line, None, f"not valid UTF-8 (byte 0x{data[err.start]:02x})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several documents one after another: a JSON Lines file named .json
            yield from _jsonl_rows(path)
            return
        raise PreferenceDataError(str(path), err.lineno, None, f"invalid JSON: {err}") from None
    rows = _rows_of_document(document)
    if rows is None:
        raise PreferenceDataError(
            str(path), None, None, 'expected a list of objects, or an object holding one (e.g. {"data": [...]})'
        )
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def _rows_of_document(document: Any) -> list | None:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if isinstance(document.get("data"), list):
            return document["data"]
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:  # {"rows": [...]}, {"train": [...]}, ...
            return lists[0]
    return None


def _parquet_rows(path: Path) -> Iterator[tuple[Location, Any]]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise PreferenceDataError(str(path), None, None, f"cannot read as Parquet: {err}") from None


def _csv_rows(path: Path) -> Iterator[tuple[Location, Any]]:
    def lines(f) -> Iterator[str]:
        for number, raw in enumerate(f, start=1):
            yield _decode_line(raw, path, number)

    with open(path, "rb") as f:
        reader = csv.reader(lines(f))
        header = next(reader, None)
        if header is None:
            return
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(cells) != len(header):
                raise PreferenceDataError(
                    str(path), f"row {number}", None, f"has {len(cells)} cells, the header has {len(header)}"
                )
            row = {}
            for column, cell in zip(header, cells):
                if cell == "" and column not in ("chosen", "rejected"):
                    row[column] = None  # CSV has no null; an empty cell is the closest thing
                elif column in CONVERSATION_FIELDS:
                    row[column] = _maybe_json_conversation(cell)
                else:
                    row[column] = cell
            yield f"row {number}", row


def _maybe_json_conversation(cell: str) -> Any:
    """A CSV cell holding a JSON list of message objects is a conversation; anything else is text."""
    if not cell.lstrip().startswith("["):
        return cell
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return cell


def _hub_rows(name: str, split: str) -> Iterator[tuple[Location, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown name, missing split: all mean "cannot read this"
        raise PreferenceDataError(
            name,
            None,
            None,
            "no such file, and it could not be loaded as a Hugging Face hub dataset "
            f"(split '{split}'): {type(err).__name__}: {err}",
        ) from None
    for number, row in enumerate(dataset, start=1):
        yield f"row {number}", row


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class _RowError(Exception):
    """A problem in one field; ``parse_row`` turns it into a PreferenceDataError with the location."""

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

    prompt, chosen, rejected = _split_prompt(row)
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise _RowError(name, "empty response")

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
    for _, row in _read_rows(os.fspath(source), 0, 0, "train"):
        return isinstance(row, dict) and "response" in row and "chosen" not in row
    return False


def load_responses(source: str | os.PathLike) -> list[ResponseRow]:
    """Rows of ``prompt`` (text, conversation or absent) + ``response`` (text); other columns go to meta.

    Raises:
        PreferenceDataError: naming the file, line (or row) and field of the first bad row.
    """
    name = os.fspath(source)
    rows = []
    for where, row in _read_rows(name, 0, 0, "train"):
        if not isinstance(row, dict):
            raise PreferenceDataError(name, where, None, f"expected a JSON object with 'response', got {_kind(row)}")
        response = row.get("response")
        if not isinstance(response, str) or not response.strip():
            reason = "missing" if response is None else "empty response" if isinstance(response, str) \
                else f"expected text, got {_kind(response)}"
            raise PreferenceDataError(name, where, "response", reason)
        try:  # the pair parser reads the prompt in every accepted layout
            prompt, text, _ = _split_prompt({"prompt": row.get("prompt", ""), "chosen": response, "rejected": response})
        except _RowError as err:
            raise PreferenceDataError(name, where, "response" if err.field in ("chosen", "rejected") else err.field,
                                      err.reason) from None
        meta = {k: _jsonable(v) for k, v in row.items() if k not in ("prompt", "response")}
        rows.append(ResponseRow(prompt, text, meta, f"{name}:{where}"))
    return rows


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
    """Shared turns are the prompt; what is left of each must be one assistant turn.

    This is trl's ``extract_prompt`` (longest shared run of turns) restricted to valid pairs; it is
    written out because importing ``trl.data_utils`` pulls in torch and transformers (~4 s), too
    much for reading a JSON file. tests/test_preference.py checks the two agree.
    """
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        role = conversation[-1]["role"]
        if role != "assistant":
            raise _RowError(name, f"the final turn is from '{role}', expected 'assistant'")
    if chosen[:-1] != rejected[:-1]:
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        raise _RowError(
            "rejected",
            f"differs from 'chosen' before the final assistant turn (at turn {shared + 1}; {len(chosen)} and "
            f"{len(rejected)} turns); a pair must share everything but the final response",
        )
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


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
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


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
        margin = float(value)
    elif isinstance(value, str):  # CSV cells are always text
        try:
            margin = float(value)
        except ValueError:
            raise _RowError("margin", f"must be a number, got {value!r}") from None
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


# --------------------------------------------------------------------------------------------
# Splits and fingerprints
# --------------------------------------------------------------------------------------------


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
    splits: dict[str, list[PreferencePair]] = {"train": [], "val": [], "test": []}
    for pair, split in zip(pairs, assign_splits([pair.prompt_id for pair in pairs], fractions, seed)):
        splits[split].append(pair)
    return splits


def assign_splits(prompt_ids: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> list[str]:
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


def data_fingerprint(source: str | os.PathLike, *, num_pairs: int, seed: int, hf_split: str = "train") -> str:
    """sha256 (hex) identifying the data ``load_preferences`` would read, for cache reuse.

    A file: its bytes (streamed). ``builtin:planted``: its parameters and the generator's source
    file, so editing the generator invalidates caches. A hub dataset: its name and split only (a
    new revision on the hub is not noticed; pin one with a local file if that matters).
    """
    name = os.fspath(source)
    digest = hashlib.sha256()
    path = Path(name)
    if not name.startswith(BUILTIN_PREFIX) and path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if name.startswith(BUILTIN_PREFIX):
        params: dict[str, Any] = {"builtin": name, "num_pairs": num_pairs, "seed": seed}
        spec = importlib.util.find_spec("sarm.data.planted") if name == "builtin:planted" else None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            params["generator"] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    else:
        params = {"hub": name, "split": hf_split}
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()

