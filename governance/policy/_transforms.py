"""Transforms: named, versioned record functions with declared purposes and a field footprint.

A :class:`Transform` says which purposes it serves and which fields it reads and writes; the plan
check (:func:`~governance.policy.check`) holds it to that before a run, and
:func:`apply_transforms` holds it to that on every record: the function sees only the fields it
reads, and a result outside what it writes is a :class:`~schemas.errors.DataError`.
:class:`TransformRegistry` finds them by ``name@version``; :func:`register_transform` is the
decorator that adds one to :data:`default_registry` (or another registry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from schemas.connector import Record
from schemas.errors import ConfigError, DataError

__all__ = ["Transform", "TransformRegistry", "apply_transforms", "default_registry", "register_transform"]


@dataclass(frozen=True, slots=True)
class Transform:
    """A named, versioned record function with its declared purposes and field footprint.

    ``fn`` receives only the fields in ``reads`` (those present) and returns a dict whose keys
    must be within ``writes``; :func:`apply_transforms` merges that back into the record.
    """

    name: str
    version: int
    purposes: frozenset[str]
    reads: frozenset[str]
    writes: frozenset[str]
    fn: Callable[[Record], Record] = field(compare=False)

    @property
    def ref(self) -> str:
        """``name@version`` — how plans and lineage cite this transform."""
        return f"{self.name}@{self.version}"


class TransformRegistry:
    """Transforms by name and version. Registering the same name@version twice is a ConfigError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, dict[int, Transform]] = {}

    def register(self, transform: Transform) -> Transform:
        """Add ``transform``; returns it (so it can be used at module level)."""
        with self._lock:
            versions = self._by_name.setdefault(transform.name, {})
            if transform.version in versions:
                raise ConfigError(f"transform {transform.ref} is already registered; bump its version")
            versions[transform.version] = transform
        return transform

    def get(self, ref: str) -> Transform | None:
        """``name@version``, or ``name`` for the newest version; ``None`` if unknown."""
        name, _, ver = ref.partition("@")
        versions = self._by_name.get(name)
        if not versions:
            return None
        if not ver:
            return versions[max(versions)]
        try:
            return versions.get(int(ver))
        except ValueError:
            return None

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.get(ref) is not None


default_registry = TransformRegistry()


def register_transform(
    name: str,
    *,
    version: int = 1,
    purposes: Iterable[str],
    reads: Iterable[str],
    writes: Iterable[str],
    registry: TransformRegistry | None = None,
) -> Callable[[Callable[[Record], Record]], Transform]:
    """Decorator: declare and register a transform function::

    @register_transform("full_name", purposes=["crm_sync"], reads=["FirstName", "LastName"],
                        writes=["FullName"])
    def full_name(r): return {"FullName": f"{r.get('FirstName', '')} {r.get('LastName', '')}"}
    """

    def decorate(fn: Callable[[Record], Record]) -> Transform:
        t = Transform(name, version, frozenset(purposes), frozenset(reads), frozenset(writes), fn)
        if not t.purposes:
            raise ConfigError(f"transform {t.ref} must declare at least one purpose it serves")
        return (registry or default_registry).register(t)

    return decorate


def apply_transforms(records: list[Record], transforms: Sequence[Transform]) -> list[Record]:
    """Run ``transforms`` in order on projected records, in place, and return them.

    Each transform sees only the fields it declared in ``reads``; a result key outside its
    ``writes`` is a :class:`DataError` (the transform broke its declaration).
    """
    for t in transforms:
        reads = tuple(t.reads)
        writes = t.writes
        fn = t.fn
        for rec in records:
            result = fn({k: rec[k] for k in reads if k in rec})
            if not writes.issuperset(result):
                raise DataError(
                    f"transform {t.ref} wrote {sorted(set(result) - writes)} outside its declared writes"
                )
            rec.update(result)
    return records
