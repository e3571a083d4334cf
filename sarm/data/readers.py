"""Rows of preference data, from the files, directories, builtin sets and hub datasets users already have.

``read_rows(source, ...)`` yields ``(location, row)``: the location is a 1-based line for line-based
files (JSON Lines, CSV, and the lines of a JSON document for its syntax errors) or ``"row N"`` for
sources numbered by row; the row is whatever the source holds (normally a dict). What it reads:

* a file, by its name: ``.jsonl`` / ``.ndjson`` (one JSON object per line, read line by line; blank
  lines are skipped), ``.json`` (a list of objects, or an object holding one such list, e.g.
  ``{"data": [...]}``; a ``.json`` file that is really JSON Lines is read as such), ``.csv`` (a
  header row; an empty cell reads as null, except in ``chosen``/``rejected``, where it is an empty
  response; a ``prompt``/``chosen``/``rejected`` cell may hold a conversation as a JSON string) or
  ``.parquet`` (read in record batches);
* the same gzip-compressed, as publishers ship them: ``.jsonl.gz``, ``.ndjson.gz``, ``.json.gz``,
  ``.csv.gz``. They are decompressed as a stream (JSON Lines and CSV never whole in memory), and
  line numbers count decompressed lines. A file whose bytes start with the gzip magic is read as
  gzip whatever its name says;
* a directory written by ``datasets``' ``save_to_disk``: a Dataset (``dataset_info.json`` /
  ``state.json``) or a DatasetDict (``dataset_dict.json``, whose split ``hf_split`` is read);
* ``builtin:planted``, the synthetic pairs of ``sarm.data.planted`` (``num_pairs``, ``seed``);
* anything else that is not an existing path: a Hugging Face hub dataset, ``load_dataset(name,
  split=hf_split)``.

Two kinds of problems, kept apart so a bad-rows policy can skip one kind and never the other:

* a problem with one row that could not even be read as a row (a line that is not valid UTF-8 or
  not valid JSON, a CSV record with the wrong number of cells) is yielded in the row's place as a
  ``BadRow``: the rows after it are still read;
* a problem with the whole source (missing, unknown type, not gzip, a truncated gzip stream, a
  JSON document that does not parse, a Parquet file pyarrow cannot read, no such split) raises
  ``PreferenceDataError`` naming the source, and the line where one applies.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarm.errors import PreferenceDataError

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("planted",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
GZIP_FORMATS = ("jsonl", "json", "csv")  # Parquet compresses its own pages
FILE_SUFFIXES = (*FORMATS, *(s + ".gz" for s, kind in FORMATS.items() if kind in GZIP_FORMATS))
CONVERSATION_FIELDS = ("prompt", "chosen", "rejected")
SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
GZIP_MAGIC = b"\x1f\x8b"
CSV_FIELD_LIMIT = 2**31 - 1  # the largest a C long holds everywhere

Location = int | str  # a 1-based file line, or "row N" for sources numbered by row


@dataclass(frozen=True, slots=True)
class BadRow:
    """Yielded in place of a row that could not be read as one; ``raw`` is its text, for the skip log."""

    reason: str
    raw: str = ""


def read_rows(name: str, num_pairs: int, seed: int, hf_split: str) -> Iterator[tuple[Location, Any]]:
    """Every row of a source, as ``(location, row or BadRow)``; raises PreferenceDataError for the source."""
    if name.startswith(BUILTIN_PREFIX):
        yield from _builtin_rows(name, num_pairs, seed)
        return
    path = Path(name)
    if path.is_dir():
        if not any((path / marker).is_file() for marker in SAVED_DATASET_FILES):
            raise PreferenceDataError(
                name,
                None,
                None,
                f"is a directory, but not one written by datasets' save_to_disk "
                f"(it has none of {', '.join(SAVED_DATASET_FILES)})",
            )
        yield from _saved_dataset_rows(path, hf_split)
        return
    if path.is_file():
        kind, gz = _file_format(path)
        if kind == "jsonl":
            yield from _jsonl_rows(path, gz)
        elif kind == "json":
            yield from _json_rows(path, gz)
        elif kind == "csv":
            yield from _csv_rows(path, gz)
        else:
            yield from _parquet_rows(path)
        return
    if path.exists():
        raise PreferenceDataError(name, None, None, "is not a file")
    if path.name.lower().endswith(FILE_SUFFIXES + (".gz",)):  # clearly meant as a file: don't ask the hub about it
        raise PreferenceDataError(name, None, None, "no such file")
    yield from _hub_rows(name, hf_split)


def _file_format(path: Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name; raises for a name no reader accepts."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = name[: -len(".gz")] if gz else name
    kind = next((FORMATS[s] for s in FORMATS if stem.endswith(s)), None)
    if kind is None or (gz and kind not in GZIP_FORMATS):
        raise PreferenceDataError(
            str(path),
            None,
            None,
            f"unknown file type '{path.suffix}'; expected one of {', '.join(FILE_SUFFIXES)}, "
            "or a directory written by datasets' save_to_disk",
        )
    if not gz and kind != "parquet":
        with open(path, "rb") as f:  # a compressed file under a plain name (some downloads drop the .gz)
            gz = f.read(2) == GZIP_MAGIC
    return kind, gz


# --------------------------------------------------------------------------------------------
# Bytes and lines
# --------------------------------------------------------------------------------------------


def _gzip_problem(path: Path, err: Exception, lines_read: int) -> PreferenceDataError:
    """A gzip failure as a named error: corrupt from the start, cut short, or damaged part-way."""
    if isinstance(err, EOFError):
        return PreferenceDataError(str(path), None, None, f"truncated gzip stream at line {lines_read + 1}")
    if lines_read == 0 and isinstance(err, gzip.BadGzipFile) and "Not a gzipped file" in str(err):
        return PreferenceDataError(str(path), None, None, "not a valid gzip file")
    return PreferenceDataError(str(path), None, None, f"corrupt gzip stream at line {lines_read + 1} ({err})")


def _binary_lines(path: Path, gz: bool) -> Iterator[tuple[int, bytes]]:
    """The file's lines as bytes, numbered from 1, decompressing a gzip stream as it goes."""
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        number, lines = 0, iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # only a gzip stream raises these
                raise _gzip_problem(path, err, number) from None
            number += 1
            yield number, raw


def _read_all(path: Path, gz: bool) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise _gzip_problem(path, err, 0) from None


def _decode(raw: bytes, line: int) -> str | BadRow:
    """A line as text, or a BadRow saying where its UTF-8 breaks."""
    try:
        # utf-8-sig on the first line drops a byte-order mark that some editors write
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        return BadRow(
            f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line)",
            raw.decode("utf-8", errors="replace"),
        )


def _parse_json(text: str) -> Any:
    """json.loads, with every way it fails (syntax, a number past Python's digit limit, nesting too deep for
    the recursion limit) as a ValueError whose message says what."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"invalid JSON: {err}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply to read") from None


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


def _jsonl_rows(path: Path, gz: bool) -> Iterator[tuple[Location, Any]]:
    for number, raw in _binary_lines(path, gz):  # bytes, so a bad UTF-8 sequence is pinned to its line
        text = _decode(raw, number)
        if isinstance(text, BadRow):
            yield number, text
            continue
        if not text.strip():
            continue
        try:
            yield number, _parse_json(text)
        except json.JSONDecodeError as err:
            yield number, BadRow(f"invalid JSON: {err}", text.rstrip("\r\n"))
        except ValueError as err:
            yield number, BadRow(str(err), text.rstrip("\r\n"))


def _json_rows(path: Path, gz: bool) -> Iterator[tuple[Location, Any]]:
    data = _read_all(path, gz)  # a JSON document cannot be parsed piecewise; JSON Lines can
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PreferenceDataError(str(path), line, None, f"not valid UTF-8 (byte 0x{data[err.start]:02x})") from None
    try:
        document = _parse_json(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and _is_json_object(text.split("\n", 1)[0]):
            # one object after another: a JSON Lines file named .json (not a document with junk after it)
            del data, text
            yield from _jsonl_rows(path, gz)
            return
        raise PreferenceDataError(str(path), err.lineno, None, f"invalid JSON: {err}") from None
    except ValueError as err:
        raise PreferenceDataError(str(path), None, None, str(err)) from None
    del data, text
    rows = _rows_of_document(document)
    if rows is None:
        raise PreferenceDataError(
            str(path), None, None, 'expected a list of objects, or an object holding one (e.g. {"data": [...]})'
        )
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(_parse_json(text), dict)
    except ValueError:
        return False


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except (OSError, ValueError, pa.ArrowException) as err:  # ArrowInvalid is a ValueError; damaged files raise others
        raise PreferenceDataError(str(path), None, None, f"cannot read as Parquet: {err}") from None


def _csv_rows(path: Path, gz: bool) -> Iterator[tuple[Location, Any]]:
    """Records of a CSV file with a header. A record may span lines (quoted newlines); one holding bytes that
    are not UTF-8 is a BadRow at the first such line, and one with the wrong number of cells at its row."""
    broken: list[tuple[int, BadRow]] = []  # the lines of the current record that are not UTF-8

    def lines() -> Iterator[str]:
        for number, raw in _binary_lines(path, gz):
            text = _decode(raw, number)
            if isinstance(text, BadRow):
                broken.append((number, text))
                text = raw.decode("utf-8", errors="replace")  # keeps the record's shape; the row is reported
            yield text

    # csv refuses cells over 128 KiB by default; a long response is a legitimate cell. (The limit is
    # process-wide in the csv module; raising it only lets other readers accept longer cells too.)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(lines())
    try:
        header = next(reader, None)
        if header is None:
            return
        if broken:
            line, bad = broken[0]
            raise PreferenceDataError(str(path), line, None, f"header: {bad.reason}")
        number = 0
        for cells in reader:
            number += 1
            if broken:
                line, bad = broken[0]
                broken.clear()
                yield line, BadRow(bad.reason, ",".join(cells))
                continue
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if len(cells) != len(header):
                yield f"row {number}", BadRow(f"has {len(cells)} cells, the header has {len(header)}", ",".join(cells))
                continue
            yield f"row {number}", _csv_record(header, cells)
    except csv.Error as err:  # e.g. a field larger than csv's field size limit
        raise PreferenceDataError(str(path), reader.line_num, None, f"cannot read as CSV: {err}") from None


def _csv_record(header: list[str], cells: list[str]) -> dict:
    row = {}
    for column, cell in zip(header, cells):
        if cell == "" and column not in ("chosen", "rejected"):
            row[column] = None  # CSV has no null; an empty cell is the closest thing (but an empty response is text)
        elif column in CONVERSATION_FIELDS:
            row[column] = _maybe_json_conversation(cell)
        else:
            row[column] = cell
    return row


def _maybe_json_conversation(cell: str) -> Any:
    """A CSV cell holding a JSON list of message objects is a conversation; anything else is text."""
    if not cell.lstrip().startswith("["):
        return cell
    try:
        value = _parse_json(cell)
    except ValueError:
        return cell
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return cell


def _saved_dataset_rows(path: Path, split: str) -> Iterator[tuple[Location, Any]]:
    """A ``save_to_disk`` directory: a Dataset, or split ``split`` of a DatasetDict."""
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # a damaged or partial directory: datasets raises many kinds
        raise PreferenceDataError(
            str(path), None, None, f"cannot read as a datasets save_to_disk directory: {type(err).__name__}: {err}"
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise PreferenceDataError(
                str(path), None, None, f"has no split '{split}' (hf_split); its splits: {', '.join(dataset)}"
            )
        dataset = dataset[split]
    for number, row in enumerate(dataset, start=1):
        yield f"row {number}", row


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


def source_files(path: Path) -> list[Path]:
    """The files whose bytes make up a file or directory source, in a stable order (for fingerprints)."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())


def is_path_source(name: str) -> bool:
    """Whether ``name`` is read from the local disk (a file or directory), not generated or fetched."""
    return not name.startswith(BUILTIN_PREFIX) and (os.path.isfile(name) or os.path.isdir(name))
