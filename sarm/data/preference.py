"""Preference pairs from the files, directories, builtin sets and hub datasets that users already have.

``load_preferences(source)`` reads what ``sarm.data.readers`` reads: ``.jsonl`` / ``.ndjson`` /
``.json`` / ``.csv`` / ``.parquet`` files, the first four also gzip-compressed (``.jsonl.gz``, ...),
``datasets`` ``save_to_disk`` directories (split ``hf_split`` of a DatasetDict), ``builtin:planted``
and Hugging Face hub datasets; each row goes through ``sarm.data.rows.parse_row``.

Bad rows (a field missing or of the wrong type, a line that is not JSON or not UTF-8, ...) follow the
``bad_rows`` policy:

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
import os
import sys
from collections.abc import Iterator
from typing import Any, Literal

from sarm.data.readers import BadRow, Location, read_rows
from sarm.data.rows import PreferencePair, RowError, jsonable, row_to_pair
from sarm.errors import BadRowsError, PreferenceDataError, SarmInputError

BAD_ROW_POLICIES = ("error", "skip")

SKIP_HINT = "pass --bad_rows skip to leave bad rows out (each is listed in skipped_rows.jsonl)"

SHOWN_LOCATIONS = 5  # skip counts on stderr name this many lines/rows


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
    log = LeftOut(name, bad_rows, skipped)
    count, seen = 0, {}
    for where, row in read_rows(name, num_pairs, seed, hf_split):
        try:
            pair = _parse_any(row, name, where)
        except RowError as err:
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
    """A row, or the BadRow a reader yielded in its place, as a pair; raises RowError."""
    if isinstance(row, BadRow):
        raise RowError(None, row.reason)
    try:
        return row_to_pair(row, path, where)
    except RecursionError:  # a value nested thousands deep
        raise RowError(None, "nested too deeply to read") from None


def _place(where: Location) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


class LeftOut:
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
                {"origin": f"{self.name}:{where}", "field": field_name, "reason": reason, "row": jsonable(row)}
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
