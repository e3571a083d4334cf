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
        super().__init__(self.describe(path, line, field, reason))

    @staticmethod
    def describe(path: str, line: int | str | None, field: str | None, reason: str) -> str:
        """``<path>[:<line or row N>]: [field '<name>': ]<reason>``, the one-line form of every row problem."""
        where = str(path) if line is None else f"{path}:{line}"
        what = f"field '{field}': {reason}" if field else reason
        return f"{where}: {what}"


class BadRowsError(PreferenceDataError):
    """Every bad row of a source, found in one pass. It is the first bad row as a PreferenceDataError
    (same attributes, same first line), followed by up to ``SHOWN`` more, one a line, and the total.

    Args:
        path: the source.
        rows: ``(line or "row N", field or None, reason)`` of the first bad rows, in order (at least one).
        total: how many rows were bad in all.
        hint: a last sentence saying how to get past them (may be empty).
    """

    SHOWN = 10  # bad rows listed after the first

    def __init__(self, path: str, rows: list[tuple[int | str, str | None, str]], total: int, hint: str = ""):
        super().__init__(path, *rows[0])
        self.total = total
        lines = [str(self)] + [self.describe(path, *row) for row in rows[1 : 1 + self.SHOWN]]
        listed = len(lines)
        if total > listed:
            lines.append(f"... and {total - listed} more bad rows ({total} in all)" + (f"; {hint}" if hint else ""))
        elif total > 1 or hint:
            lines.append(f"{total} bad row{'s' if total > 1 else ''} in all" + (f"; {hint}" if hint else ""))
        self.args = ("\n".join(lines),)


class NumericalFault(Exception):
    """Training met a non-finite value (NaN/inf loss or inputs). The run stops; checkpoints already
    written stay as they were, so the last good one can be resumed from."""
