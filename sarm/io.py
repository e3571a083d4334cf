"""Atomic file writes: a killed run never leaves a half-written file that a later run would trust.
Written files get the usual mode (0o666 less the umask), and JSON holds no bare ``NaN``/``Infinity``.
And file names made from data: they stay inside the directory they are meant for."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file_beside(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask allows
    try:
        yield tmp
        if stat.S_IMODE(tmp.stat().st_mode) != mode:  # a writer that replaced the file (safetensors makes 0o600)
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_file_beside(path: Path) -> Path:
    """A new, empty file ``.<name>.<random>.tmp`` beside ``path``, created as ``open()`` would create it:
    mode 0o666 less the umask (``tempfile.mkstemp`` makes 0o600, which the rename would carry over).
    ``O_EXCL`` makes the name ours alone, as mkstemp does; the kernel applies the umask, so it is
    never read (reading it means setting it, which races with other threads)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def finite_json(obj):
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``: JSON has no such numbers,
    and the bare ``NaN`` / ``Infinity`` Python would write is rejected by strict parsers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj, **kwargs) -> str:
    """``json.dumps`` that writes strict JSON: non-finite floats become ``null`` (``finite_json``)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` atomically as strict JSON: a NaN or inf anywhere in it is written as ``null``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def file_name(text: str) -> str:
    """A single, harmless path component made from ``text`` (a dataset name, a hub id, a path):
    separators and other unusual characters become ``-`` and leading dots go, so ``../x`` cannot
    climb out of the directory it is joined to."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip(".-") or "data"
