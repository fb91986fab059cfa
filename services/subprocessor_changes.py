"""Subprocessor changes (GDPR Art. 28(2)): propose a new registry version, let tenants object within
a window, then apply it to everyone who did not object.

* :func:`propose` — the first proposal records the registry crmhub ran under as version 1 (applied);
  the new version gets the next number and a window that closes ``window`` later. One proposal is
  open at a time. Every tenant the change concerns (:func:`governance.registry_versions.affects`)
  gets a controller notice (:mod:`services.notices`) and a ``registry`` event ``step=notice``.
* :func:`object_to` — a tenant objects to an open version before its window closes, choosing
  ``keep`` (its syncs keep running on the versions it accepted) or ``stop``; ``step=objection``.
* :func:`close` — once the window has closed the version is applied: each tenant's ledger gets
  ``step=applied`` (it now runs under this version) or ``step=not_applied`` (its objection holds it
  back; the event names the choice and the version it keeps running on).

The plan check of every run then uses the tenant's effective version
(:func:`governance.registry_versions.effective_registry`) and cites it (``step=planned``). Each
step first commits its rows, then appends its events; a failed append raises and the step may be
repeated only for events (the rows say what was decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.engine import Engine

from governance.lineage import Ledger, RunRef
from governance.registry import Registry
from governance.registry_versions import (
    RegistryChange,
    affects,
    content_hash,
    effective_registry,
    registry_change,
    registry_content,
    registry_of,
)
from schemas.errors import ConfigError
from schemas.lineage import DetailValue, EventKind, LineageEvent, format_timestamp
from services.notices import NoticeKind, enqueue_notice
from store import subprocessor_versions as version_store
from store import tenants as tenant_store
from store.subprocessor_versions import ObjectionChoice, ObjectionRow, VersionRow

__all__ = [
    "MAX_WINDOW",
    "Closing",
    "Proposal",
    "close",
    "object_to",
    "propose",
    "registry_event",
    "run_id_of",
]

MAX_WINDOW: Final = timedelta(days=365)
"""The longest objection window accepted (a typo of a year or more is refused)."""


def run_id_of(version: int) -> str:
    """The lineage run id of every event of registry ``version``'s change."""
    return f"subprocessors-v{version}"


def registry_event(
    tenant: str, version: int, step: str, *, at: datetime, **details: DetailValue
) -> LineageEvent:
    """A ``registry`` lineage event of ``tenant`` about registry ``version`` (``step``: notice,
    objection, applied, not_applied)."""
    return RunRef(tenant=tenant, run_id=run_id_of(version)).event(
        EventKind.REGISTRY, at=at, details={"step": step, "version": version, **details}
    )


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed version, what it changes and the tenants notified."""

    version: VersionRow
    change: RegistryChange
    notified: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Closing:
    """A closed window: the tenants the version now applies to and those it does not (objections)."""

    version: int
    applied_to: tuple[str, ...]
    not_applied: tuple[ObjectionRow, ...]


def propose(
    engine: Engine,
    configured: Registry,
    new: Registry,
    *,
    summary: str,
    window: timedelta,
    now: datetime,
) -> Proposal:
    """Record ``new`` as the next version, its window closing ``window`` after ``now``, and notify the
    tenants it concerns: a controller notice each (:func:`services.notices.enqueue_notice`, delivered
    to the tenant's contacts) and a ``registry`` event ``step=notice`` citing it. A change that
    changes nothing, a window outside 0..:data:`MAX_WINDOW` or an open proposal is a
    :class:`ConfigError`."""
    if not timedelta(0) <= window <= MAX_WINDOW:
        raise ConfigError(f"--window must be between 0 and {MAX_WINDOW.days} days")
    summary = summary.strip()
    if not summary or len(summary) > 500:
        raise ConfigError("--summary must say what changes and why, in 1 to 500 characters")
    content = registry_content(new)
    with engine.begin() as conn:
        rows = version_store.list_versions(conn)
        if not rows:
            base = registry_content(configured)
            rows = [
                version_store.add_version(
                    conn, version=1, content=base, content_hash=content_hash(base),
                    summary="the registry in force before the first proposed change",
                    proposed=now, window_closes=now, applied=now,
                )
            ]  # fmt: skip
        open_ = [r.version for r in rows if r.applied is None]
        if open_:
            raise ConfigError(
                f"version {open_[0]} is still proposed; close its window first (crmhub subprocessors close)"
            )
        current = registry_of(rows[-1].content)
        change = registry_change(current, new)
        if change.empty:
            raise ConfigError(f"the proposed registry is the same as version {rows[-1].version}")
        row = version_store.add_version(
            conn,
            version=rows[-1].version + 1,
            content=content,
            content_hash=content_hash(content),
            summary=summary,
            proposed=now,
            window_closes=now + window,
        )
        concerned = [
            t.id
            for t in tenant_store.list_tenants(conn)
            if affects(change, current, new, t.authorised_subprocessors)
        ]
    details: dict[str, DetailValue] = {
        "previous_version": rows[-1].version,
        "content_hash": row.content_hash,
        "summary": row.summary,
        "added": ",".join(change.added) or None,
        "removed": ",".join(change.removed) or None,
        "changed": ",".join(change.changed) or None,
        "other": ",".join(change.other) or None,
        "window_closes": format_timestamp(row.window_closes),
    }
    facts: dict[str, DetailValue] = {
        "version": row.version,
        "previous_version": rows[-1].version,
        "window_closes": details["window_closes"],
        **{k: details[k] for k in ("added", "removed", "changed", "other") if details[k] is not None},
    }
    for tenant in concerned:
        notice = enqueue_notice(
            engine, tenant=tenant, kind=NoticeKind.SUBPROCESSOR_CHANGE, facts=facts,
            subject=run_id_of(row.version), now=now,
        )  # fmt: skip
        Ledger(engine, tenant).append(
            [registry_event(tenant, row.version, "notice", at=now, notice_id=notice.notice_id, **details)]
        )
    return Proposal(row, change, tuple(concerned))


def object_to(
    engine: Engine, tenant: str, version: int, choice: ObjectionChoice, *, by: str, now: datetime
) -> ObjectionRow:
    """Record ``tenant``'s objection to the proposed ``version`` (``choice``: keep or stop); a version
    that is unknown, applied or past its window, or an unknown tenant, is a :class:`ConfigError`."""
    with engine.begin() as conn:
        if tenant_store.get_tenant(conn, tenant) is None:
            raise ConfigError(f"unknown tenant {tenant!r}")
        row = version_store.get_version(conn, version)
        if row is None or row.version == 1:
            raise ConfigError(f"no proposed subprocessor registry version {version}")
        if row.applied is not None or now >= row.window_closes:
            raise ConfigError(
                f"the objection window of version {version} closed at "
                f"{format_timestamp(row.window_closes)}; objections are no longer accepted"
            )
        objection = version_store.add_objection(
            conn, version=version, tenant=tenant, choice=choice, at=now, by=by
        )
    Ledger(engine, tenant).append(
        [registry_event(tenant, version, "objection", at=now, choice=choice.value, by=by)]
    )
    return objection


def close(engine: Engine, configured: Registry, version: int, *, now: datetime) -> Closing:
    """Apply ``version`` once its window has closed: an ``applied`` or ``not_applied`` event for every
    tenant. Before the window closes, or for a version that is unknown or applied, a
    :class:`ConfigError`."""
    with engine.begin() as conn:
        row = version_store.get_version(conn, version)
        if row is None:
            raise ConfigError(f"no subprocessor registry version {version}")
        if row.applied is not None:
            raise ConfigError(f"version {version} was applied at {format_timestamp(row.applied)}")
        if now < row.window_closes:
            raise ConfigError(
                f"the objection window of version {version} is open until "
                f"{format_timestamp(row.window_closes)}; close it after that"
            )
        version_store.mark_applied(conn, version, at=now)
        tenants = tenant_store.list_tenants(conn)
        effective = {t.id: effective_registry(conn, configured, t.id) for t in tenants}
    applied: list[str] = []
    held: list[ObjectionRow] = []
    for t in tenants:
        e = effective[t.id]
        if e.held_by is None:
            applied.append(t.id)
            event = registry_event(t.id, version, "applied", at=now, effective_version=e.version)
        else:
            held.append(e.held_by)
            event = registry_event(
                t.id, version, "not_applied", at=now, effective_version=e.version,
                choice=e.held_by.choice.value, objected_version=e.held_by.version,
            )  # fmt: skip
        Ledger(engine, t.id).append([event])
    return Closing(version, tuple(applied), tuple(held))
