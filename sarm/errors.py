"""Errors that describe bad user input. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations


class SarmInputError(Exception):
    """Bad input from the user: a file, a row, a config value.

    The message must say where (file, line or row, field) and what is wrong, so the user can fix
    it without reading a traceback.
    """


class PreferenceDataError(SarmInputError):
    """A preference-data row that cannot be read; names the file, the line (or row) and the field."""

    def __init__(self, path: str, line: int | str | None, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': {reason}" if field else reason
        super().__init__(f"{where}: {what}")


class NumericalFault(Exception):
    """Training met a non-finite value (NaN/inf loss or inputs). The run stops; checkpoints already
    written stay as they were, so the last good one can be resumed from."""
