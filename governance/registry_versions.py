"""Versions of the subprocessor registry and the one each tenant runs under (GDPR Art. 28(2)).

A version's content is the registry without the tenants' residency (regions, subprocessors,
endpoints, routes, contacts: :func:`registry_content`), identified by the SHA-256 of its canonical
JSON (:func:`content_hash`). :func:`registry_change` says what a version changes against another
(subprocessors added, removed or changed; endpoints, routes, regions or contacts changed) and
:func:`affects` whether that concerns a tenant (crmhub's own infrastructure concerns every tenant, a
vendor only the tenants that authorised it).

The tenant's effective version (:func:`effective_registry`), the rule the plan check applies:

* an unversioned deployment (no versions stored) runs everyone under the configured registry
  (version ``None``);
* otherwise a tenant runs under the newest *applied* version below the first applied version it
  objected to — a later version carries the change it objected to, so that is held back too;
* an objection to a version whose window is still open holds nothing back yet;
* the objection that holds a tenant back says what its syncs do: ``keep`` (run on the old set) or
  ``stop`` (every run refused, rule ``subprocessor_objection``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from governance.registry import Registry
from store import subprocessor_versions as version_store
from store.subprocessor_versions import ObjectionChoice, ObjectionRow

__all__ = [
    "Effective",
    "RegistryChange",
    "affects",
    "content_hash",
    "effective_registry",
    "registry_change",
    "registry_content",
    "registry_of",
]


def registry_content(registry: Registry) -> dict[str, Any]:
    """The versioned part of ``registry``: everything but the tenants' residency, as JSON."""
    content: dict[str, Any] = registry.model_dump(mode="json", by_alias=True, exclude={"tenants"})
    return content


def content_hash(content: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, compact, UTF-8) of a version's content."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def registry_of(content: dict[str, Any]) -> Registry:
    """The registry of a stored version (no tenants: the caller adds the residency it needs)."""
    return Registry.model_validate({**content, "tenants": []})


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """What a version changes: subprocessor ids added, removed, changed, and whether endpoints,
    routes, regions or contacts changed (``other``)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.other)

    def describe(self) -> str:
        parts = [
            f"{label} {','.join(ids)}"
            for label, ids in (("added", self.added), ("removed", self.removed), ("changed", self.changed))
            if ids
        ]
        if self.other:
            parts.append(f"{','.join(self.other)} changed")
        return "; ".join(parts) or "no change"


def registry_change(old: Registry, new: Registry) -> RegistryChange:
    """What ``new`` changes against ``old``."""
    before = {s.id: s for s in old.subprocessors}
    after = {s.id: s for s in new.subprocessors}
    other = tuple(
        name
        for name in ("regions", "endpoints", "transfers", "contacts")
        if getattr(old, name) != getattr(new, name)
    )
    return RegistryChange(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(i for i in before.keys() & after.keys() if before[i] != after[i])),
        other=other,
    )


def affects(change: RegistryChange, old: Registry, new: Registry, authorised: tuple[str, ...]) -> bool:
    """Whether ``change`` concerns a tenant that authorised ``authorised``: any change to crmhub or
    its infrastructure, to a subprocessor it authorised, or to endpoints, routes or regions."""
    if set(change.other) - {"contacts"}:
        return True
    roles = {s.id: s.role for s in (*old.subprocessors, *new.subprocessors)}
    return any(
        roles[i] != "subprocessor" or i in authorised
        for i in (*change.added, *change.removed, *change.changed)
    )


@dataclass(frozen=True, slots=True)
class Effective:
    """The registry a tenant runs under: ``version`` (``None``: unversioned) and the objection that
    holds it back from newer versions, if any."""

    registry: Registry
    version: int | None
    held_by: ObjectionRow | None = None

    @property
    def stopped(self) -> bool:
        """The tenant objected and chose that its syncs stop."""
        return self.held_by is not None and self.held_by.choice is ObjectionChoice.STOP


def effective_registry(
    conn: Connection, configured: Registry, tenant: str, cache: dict[str, Registry] | None = None
) -> Effective:
    """The registry ``tenant`` runs under (the module docstring's rule). ``cache`` (content hash →
    registry) spares rebuilding a version already seen."""
    heads = version_store.version_heads(conn)
    if not heads:
        return Effective(configured, None)
    applied = {v for v, done, _ in heads if done}
    held = next((o for o in version_store.list_objections(conn, tenant=tenant) if o.version in applied), None)
    version, digest = max((v, h) for v, done, h in heads if done and (held is None or v < held.version))
    registry = cache.get(digest) if cache is not None else None
    if registry is None:
        row = version_store.get_version(conn, version)
        assert row is not None  # listed just now; versions are never deleted
        registry = registry_of(row.content)
        if cache is not None:
            cache[digest] = registry
    return Effective(registry, version, held)
