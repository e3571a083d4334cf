"""Checking that an object provides a ``typing.Protocol``'s members, before any of them is used.

The Lightning modules read their data modules through small Protocols (``sarm.reward.data.RewardData``,
``sarm.sae.module.ActivationData``); a data module lacking a member is refused in ``setup`` with what it lacks,
rather than failing later on an attribute error (or silently on a ``getattr`` default).
"""

from __future__ import annotations

import inspect


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The names a Protocol declares: annotated attributes, properties and methods (not dunders)."""
    names = {*getattr(protocol, "__annotations__", {}), *(n for n in vars(protocol) if not n.startswith("_"))}
    return tuple(sorted(names))


def missing_members(obj, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks, looked up without evaluating them (a property may read a
    cache or a model config)."""
    return [name for name in protocol_members(protocol) if not _has(obj, name)]


def _has(obj, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True
