"""Explanations stored per SAE feature, so a feature is explained once and reused.

An explanation belongs to a feature of one particular SAE: the store is keyed by an SAE
fingerprint and the feature id, then the method (``offline``, ``llm``)::

    {"version": 1,
     "explanations": {"<sae_key>": {"<feature>": {"<method>": {
         "text": ..., "method": ..., "detection": 0.83 | null, "evidence": [...],
         "created": "2025-01-01T12:00:00+00:00", ...provenance}}}}}

``sae_key`` = the first 16 hex digits of sha256 over the SAE's architecture config (architecture,
widths, k, input norm, BatchTopK threshold) and the bytes of its four parameters (W_enc, b_enc,
W_dec, b_dec as contiguous float32), i.e. of exactly what decides the features' activations; the
same SAE loaded from a sarm, SAELens or sparsify directory, or held in memory, has one key.

The default file is ``cache_root() / "explanations" / f"{sae_key}.json"``. Writes are atomic
(``sarm.io.write_json``) and re-read the file first, so explanations that another process put in
meanwhile are kept (last writer wins per entry; there is no lock).

Reading checks the whole file (``sarm.files``): the version, every entry's ``text`` and ``method``
(strings), ``evidence`` (a list) and ``detection`` (a number in 0..1 or null); a hand-edited or
corrupt store is refused with the field named (``explanations.<sae_key>.<feature>.<method>.text``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from sarm.backbone import cache_root
from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object
from sarm.io import write_json

STORE_VERSION = 1
_PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass
class Explanation:
    """A feature's explanation: its text, how it was made, what supports it, how well it detects."""

    text: str
    method: str  # "offline" | "llm"
    evidence: list = field(default_factory=list)  # offline: scored n-grams; llm: test texts + activations
    detection: float | None = None  # balanced accuracy on held-out contexts (sarm.explain.detection)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Explanation:
        return cls(
            text=d["text"], method=d["method"], evidence=list(d.get("evidence") or []), detection=d.get("detection")
        )


@torch.no_grad()
def sae_fingerprint(sae) -> str:
    """16 hex digits identifying an SAE by its config and parameter bytes (see the module docstring)."""
    digest = hashlib.sha256(json.dumps(sae.config(), sort_keys=True).encode())
    for name in _PARAMETERS:
        tensor = getattr(sae, name).detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy())  # the buffer itself: no copy of the SAE's bytes
    return digest.hexdigest()[:16]


def default_store_path(sae_key: str) -> Path:
    return cache_root() / "explanations" / f"{sae_key}.json"


def check_store(store: Fields) -> None:
    """Every field of an explanation store that ``get`` and ``put`` read, of the right type."""
    store.integer("version", low=1, high=STORE_VERSION)
    explanations = store.section("explanations")
    for sae_key in explanations.keys():
        features = explanations.section(sae_key)
        for feature in features.keys():
            if not feature.isdigit():
                raise features.error(feature, "expected a feature number as the key")
            methods = features.section(feature)
            for method in methods.keys():
                entry = methods.section(method)
                entry.text("text")
                entry.text("method")
                if not isinstance(entry.data.get("evidence") or [], list):  # null: none
                    raise entry.error("evidence", f"expected a list, got {type(entry.data['evidence']).__name__}")
                entry.number("detection", low=0.0, high=1.0, default=None, nullable=True)


class ExplanationStore:
    """A JSON file of explanations keyed by (sae_key, feature, method)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict:
        if not self.path.is_file():
            return {"version": STORE_VERSION, "explanations": {}}
        try:
            data = read_json_object(self.path)
        except SarmInputError as e:
            raise SarmInputError(f"{e}; delete it to start over") from None
        check_store(Fields(data, self.path))
        return data

    def get(self, sae_key: str, feature: int, method: str) -> Explanation | None:
        entry = self._read()["explanations"].get(sae_key, {}).get(str(int(feature)), {}).get(method)
        return Explanation.from_dict(entry) if entry else None

    def entry(self, sae_key: str, feature: int, method: str) -> dict | None:
        """The stored record as written, with its creation time and provenance."""
        return self._read()["explanations"].get(sae_key, {}).get(str(int(feature)), {}).get(method)

    def put(self, sae_key: str, feature: int, explanation: Explanation, **provenance) -> None:
        """Store (or replace) the explanation of ``feature`` by ``explanation.method``.

        ``provenance`` (JSON-serializable) is kept beside it, e.g. the cache it was computed on.
        """
        data = self._read()  # re-read: keep what others stored since we last looked
        features = data["explanations"].setdefault(sae_key, {})
        methods = features.setdefault(str(int(feature)), {})
        methods[explanation.method] = {
            **explanation.to_dict(),
            **provenance,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(self.path, data)
