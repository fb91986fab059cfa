"""Breach incidents as one tenant's auditor sees them (``/audit/incidents``, ``crmhub audit report
--kind incidents``): each incident that concerns the tenant — only the tenant's own part of it
(:func:`services.incidents.incident_report` with ``tenant``; no other tenant is named) — and the
ledger events that prove its times (``incident`` events: ``became_aware``, ``notified``,
``updated``; the breach notice's ``notice`` events: ``enqueued``, ``delivered``), each cited by its
ledger index so the auditor checks it against the signed ledger report offline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from schemas.lineage import EventKind, LineageEvent, format_timestamp
from services.incidents import incident_report, list_incidents

__all__ = ["incident_history"]


def _cited(idx: int, e: LineageEvent) -> dict[str, Any]:
    return {"index": idx, "timestamp": format_timestamp(e.timestamp), "counts": dict(e.counts), **e.details}


def incident_history(
    engine: Engine, tenant: str, events: list[tuple[int, LineageEvent]], *, now: datetime
) -> dict[str, Any]:
    """The tenant's incidents and their ledger evidence; ``events`` are the tenant's ``(index, event)``."""
    incidents = list_incidents(engine, tenant=tenant)
    notices = {t.notice_id for i in incidents for t in i.tenants if t.tenant == tenant and t.notice_id}
    out = []
    for incident in incidents:
        doc = incident_report(incident, tenant=tenant, now=now)
        (part,) = doc.pop("tenants")
        run = f"incident:{incident.row.id}"
        doc["ledger"] = [_cited(i, e) for i, e in events if e.kind is EventKind.INCIDENT and e.run_id == run]
        doc["notice_ledger"] = [
            _cited(i, e)
            for i, e in events
            if e.kind is EventKind.NOTICE
            and part["notice_id"]
            and e.details.get("notice_id") == part["notice_id"]
        ]
        out.append({**doc, **{k: v for k, v in part.items() if k != "tenant"}})
    return {
        "format": "crmhub.audit.incidents/1",
        "tenant": tenant,
        "incidents": out,
        "breach_notices": sorted(notices),
    }
