"""Reading the files sarm trusts: JSON configs and safetensors weights, checked on the way in.

Every failure is a ``SarmInputError`` naming the file and, where one is at fault, the field:
``<file>: field '<name>': <what is wrong>``. A corrupt or hand-edited file so ends in one
``sarm: error:`` line, never in a traceback from deep inside torch or a silently wrong model.
Tensors are fields too, named by their key; nested JSON fields by their dotted path
(``backbone.layer``).

    fields = Fields(read_json_object(path), path)
    d_in = fields.integer("d_in", low=1)             # type, range, finiteness, presence
    weights = read_tensors(weights_path)
    W_enc = weights.get("W_enc", (d_in, d_sae))      # presence, shape, dtype, finiteness
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch

from sarm.errors import SarmInputError

_MISSING = object()  # "no default": the field is required


def _show(value) -> str:
    """A value as the user wrote it in JSON (``true``, ``null``, ``NaN``, ``'abc'``), cut short."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def _missing(path: Path, hint: str | None) -> SarmInputError:
    return SarmInputError(f"{path}: missing" + (f" ({hint})" if hint else ""))


def read_json_object(path: str | Path, *, missing: str | None = None) -> dict:
    """The JSON object in ``path``, or a named error: missing (with the ``missing`` hint), not text,
    not JSON (with the line), not an object."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SarmInputError(f"{path}: not a UTF-8 text file (expected JSON)") from None
    except json.JSONDecodeError as e:
        raise SarmInputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise SarmInputError(f"{path}: expected a JSON object, got {_JSON_TYPES.get(type(data), 'something else')}")
    return data


class Fields:
    """The fields of one JSON object read from ``path``; each accessor checks one field's type and
    range and names it (with ``prefix``, for nested objects) when it is wrong.

    ``default`` is returned when the field is absent; without one the field is required. ``null``
    is a value like any other: refused unless ``nullable``.
    """

    def __init__(self, data: dict, path: str | Path, prefix: str = ""):
        self.data, self.path, self.prefix = data, Path(path), prefix

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def error(self, name: str, reason: str) -> SarmInputError:
        return SarmInputError(f"{self.path}: field '{self.prefix}{name}': {reason}")

    def _absent(self, name: str, default) -> bool:
        """Whether ``name`` is absent and optional (its default stands); absent and required is an error."""
        if name in self.data:
            return False
        if default is _MISSING:
            raise self.error(name, "missing")
        return True

    def integer(
        self,
        name: str,
        *,
        low: int | None = None,
        high: int | None = None,
        default=_MISSING,
        nullable: bool = False,
        integral_floats: bool = False,
    ) -> int | None:
        """An integer in ``low..high``; ``integral_floats`` also accepts ``4.0`` (as other tools write k)."""
        if self._absent(name, default):
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        integral = integral_floats and isinstance(value, float) and math.isfinite(value) and value == int(value)
        if (
            isinstance(value, bool)
            or not (isinstance(value, int) or integral)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            kind = "a positive integer" if low == 1 and high is None else f"an integer{_range(low, high)}"
            raise self.error(name, f"expected {kind}{' or null' if nullable else ''}, got {_show(value)}")
        return int(value)

    def number(
        self,
        name: str,
        *,
        low: float | None = None,
        high: float | None = None,
        positive: bool = False,
        default=_MISSING,
        nullable: bool = False,
    ) -> float | None:
        """A finite number in ``low..high`` (``positive``: > 0)."""
        if self._absent(name, default):
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
            or (positive and value <= 0)
        ):
            kind = "a finite number > 0" if positive else f"a finite number{_range(low, high)}"
            raise self.error(name, f"expected {kind}{' or null' if nullable else ''}, got {_show(value)}")
        return float(value)

    def choice(self, name: str, options: Iterable[str], default=_MISSING) -> str:
        """One of ``options``."""
        if self._absent(name, default):
            return default
        value, options = self.data[name], tuple(options)
        if not isinstance(value, str) or value not in options:
            expected = " or ".join(", ".join(repr(o) for o in options).rsplit(", ", 1))
            raise self.error(name, f"expected {expected}, got {_show(value)}")
        return value

    def text(self, name: str, default=_MISSING, *, nullable: bool = False) -> str | None:
        """A non-empty string."""
        if self._absent(name, default):
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(name, f"expected a non-empty string{' or null' if nullable else ''}, got {_show(value)}")
        return value

    def boolean(self, name: str, default=_MISSING, *, nullable: bool = False) -> bool | None:
        if self._absent(name, default):
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false{' or null' if nullable else ''}, got {_show(value)}")
        return value

    def section(self, name: str, default=_MISSING) -> Fields:
        """A nested JSON object, whose fields are named ``<name>.<field>``; ``default`` (a dict) when absent."""
        value = default if self._absent(name, default) else self.data[name]
        if not isinstance(value, dict):
            raise self.error(name, f"expected a JSON object, got {_show(value)}")
        return Fields(value, self.path, f"{self.prefix}{name}.")


# ----------------------------------------------------------------------------- safetensors


def _shape_text(shape: Iterable) -> str:
    return "[" + ", ".join("?" if n is None else str(n) for n in shape) + "]"


class Tensors:
    """The tensors of one safetensors file; ``get`` checks one tensor and names it when it is wrong."""

    def __init__(self, tensors: dict[str, torch.Tensor], path: str | Path):
        self.tensors, self.path = tensors, Path(path)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __iter__(self):
        return iter(self.tensors)

    def error(self, name: str, reason: str) -> SarmInputError:
        return SarmInputError(f"{self.path}: field '{name}': {reason}")

    def get(self, name: str, shape: tuple | None = None, *, kind: str = "float") -> torch.Tensor:
        """Tensor ``name``: present, of ``shape`` (``None`` entries: any size), and of ``kind``:
        ``float`` (any floating dtype, every value finite) or ``mask`` (bool or integer 0/1)."""
        if name not in self.tensors:
            raise self.error(name, "missing")
        tensor = self.tensors[name]
        if shape is not None and (
            tensor.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, tensor.shape))
        ):
            raise self.error(name, f"shape {_shape_text(tensor.shape)}, expected {_shape_text(shape)}")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if kind == "float":
            if not tensor.is_floating_point():
                raise self.error(name, f"dtype {dtype}, expected a floating-point tensor")
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise self.error(name, f"holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or inf)")
        elif kind == "mask":
            if tensor.is_floating_point() or tensor.is_complex():
                raise self.error(name, f"dtype {dtype}, expected a bool or integer mask")
            if ((tensor != 0) & (tensor != 1)).any():
                raise self.error(name, "expected a mask of 0/1 values")
        else:
            raise ValueError(f"kind = {kind!r}: expected 'float' or 'mask'")
        return tensor

    def refuse_unknown(self, known: Iterable[str], reason: str) -> None:
        """A tensor whose name is not in ``known`` is refused, with ``reason`` saying why it matters."""
        unknown = sorted(set(self.tensors) - set(known))
        if unknown:
            raise self.error(unknown[0], reason)


def read_tensors(path: str | Path, *, missing: str | None = None) -> Tensors:
    """The tensors of the safetensors file ``path``, or a named error: missing (with the ``missing``
    hint), or unreadable (truncated, not safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise _missing(path, missing)
    try:
        return Tensors(load_file(path), path)
    except SafetensorError as e:
        raise SarmInputError(f"{path}: not a safetensors file (truncated?): {e}") from None
