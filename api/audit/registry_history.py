"""The subprocessor registry's history as one tenant's auditor sees it (``/audit/subprocessors``,
``crmhub audit report --kind subprocessors``): every version (content hash, summary, window,
when applied, what it changed), the tenant's notices and objections, the version it runs under now,
and the version each of its runs was planned under — each notice, objection, application and
plan cited by its ledger index, so the auditor can check it against the signed ledger report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from governance.registry import Registry
from governance.registry_versions import effective_registry, registry_change, registry_of
from schemas.lineage import EventKind, LineageEvent, format_timestamp
from store import subprocessor_versions as version_store

__all__ = ["registry_history"]


def _cited(idx: int, e: LineageEvent) -> dict[str, Any]:
    return {"index": idx, "timestamp": format_timestamp(e.timestamp), **e.details}


def registry_history(
    engine: Engine, configured: Registry, tenant: str, events: list[tuple[int, LineageEvent]]
) -> dict[str, Any]:
    """The history (see the module docstring); ``events`` are the tenant's ``(index, event)``."""
    with engine.connect() as conn:
        rows = version_store.list_versions(conn)
        objections = version_store.list_objections(conn, tenant=tenant)
        effective = effective_registry(conn, configured, tenant)
    versions = []
    previous: Registry | None = None
    for r in rows:
        registry = registry_of(r.content)
        change = registry_change(previous, registry) if previous is not None else None
        versions.append(
            {
                "version": r.version,
                "content_hash": r.content_hash,
                "summary": r.summary,
                "proposed": format_timestamp(r.proposed),
                "window_closes": format_timestamp(r.window_closes),
                "applied": format_timestamp(r.applied) if r.applied else None,
                "change": change.describe() if change else "initial version",
                "subprocessors": [
                    {
                        "id": s.id,
                        "role": s.role,
                        "entity": s.entity,
                        "country": s.country,
                        "regions": list(s.regions),
                    }
                    for s in registry.subprocessors
                ],
            }
        )
        previous = registry
    steps: dict[str, list[dict[str, Any]]] = {}
    for idx, e in events:
        if e.kind is EventKind.REGISTRY:
            step = str(e.details.get("step"))
            entry = _cited(idx, e)
            if step == "planned":
                entry.update(run_id=e.run_id, sync_id=e.sync_id)
            steps.setdefault(step, []).append(entry)
    return {
        "versioned": bool(rows),
        "effective_version": effective.version,
        "syncs_stopped": effective.stopped,
        "held_back_by_objection_to": effective.held_by.version if effective.held_by else None,
        "versions": versions,
        "notices": steps.get("notice", []),
        "objections": [
            {
                "version": o.version,
                "choice": o.choice.value,
                "objected": format_timestamp(o.objected),
                "by": o.by,
            }
            for o in objections
        ],
        "objection_events": steps.get("objection", []),
        "applied": steps.get("applied", []),
        "not_applied": steps.get("not_applied", []),
        "runs": steps.get("planned", []),
    }
