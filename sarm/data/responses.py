"""Single responses to score (``sarm score`` on a file with a ``response`` column): the prompt in any
layout ``sarm.data.rows`` reads, every bad row named in one run, empty responses kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sarm.data.preference import LeftOut
from sarm.data.readers import BadRow, read_rows
from sarm.data.rows import Message, RowError, jsonable, kind_of, split_prompt
from sarm.errors import BadRowsError

T = TypeVar("T")


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
    return read_all(source, response_row)


def read_all(source: str | os.PathLike, parse: Callable[[Any, str], T]) -> list[T]:
    """``parse(row, "<file>:<line>")`` of every row of ``source``; a row it refuses (``RowError``) is named, and
    after the whole file is read ``BadRowsError`` names every bad row (the first ten, then the count)."""
    name = os.fspath(source)
    rows, log = [], LeftOut(name, "error", None)
    for where, row in read_rows(name, 0, 0, "train"):
        try:
            if isinstance(row, BadRow):
                raise RowError(None, row.reason)
            rows.append(parse(row, f"{name}:{where}"))
        except RowError as err:
            log.bad(where, err.field, err.reason, row)
    if log.failing:
        raise BadRowsError(name, log.first_bad, log.counts["bad"], "")
    return rows


def response_row(row: Any, origin: str) -> ResponseRow:
    """One row of ``prompt`` + ``response`` read as ``load_responses`` reads it (``sarm serve`` reads request items
    with it too); a bad field raises ``RowError``."""
    if not isinstance(row, dict):
        raise RowError(None, f"expected a JSON object with 'response', got {kind_of(row)}")
    response = row.get("response")
    if not isinstance(response, str):
        raise RowError("response", "missing" if response is None else f"expected text, got {kind_of(response)}")
    prompt, text = split_sample(row.get("prompt"), response, "response")
    meta = {k: jsonable(v) for k, v in row.items() if k not in ("prompt", "response")}
    return ResponseRow(prompt, text, meta, origin)


def split_sample(prompt: Any, response: Any, field: str) -> tuple[list[Message], str]:
    """``(prompt messages, response text)`` of a prompt (text, a conversation or None) and a response (text or
    messages), read as the pair parser reads one side of a pair (every accepted layout); a field that cannot be
    read raises ``RowError`` naming it (``field`` for the response)."""
    try:
        messages, text, _ = split_prompt(
            {"prompt": "" if prompt is None else prompt, "chosen": response, "rejected": response}
        )
    except RowError as err:
        raise RowError(field if err.field in ("chosen", "rejected") else err.field, err.reason) from None
    except RecursionError:
        raise RowError("prompt", "nested too deeply to read") from None
    return messages, text
