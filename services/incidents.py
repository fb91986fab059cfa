"""Personal-data breaches (GDPR Art. 33(2)): crmhub, the processor, tells each affected controller
without undue delay, and proves when it became aware and when it told.

- :func:`open_incident` computes the affected tenants, subject and record counts, data categories and
  fields from lineage (:mod:`services.incident_scope`), stores the incident and appends to each
  affected tenant's ledger an ``incident`` event ``step=became_aware`` (when crmhub became aware,
  the window, nature, signal, counts, categories and field names).
- :func:`notify` enqueues one ``breach`` controller notice per affected tenant
  (:func:`services.notices.enqueue_notice`, subject = the incident id, so it is never throttled away
  by another notice, and a repeat finds the same notice) and appends ``step=notified`` with the
  delay. A tenant already notified is skipped and said so (idempotent); one without a contact is not
  marked notified (add a contact, run it again). Delivery is the ``NoticeDeliveryWorkflow``, which the
  caller starts at once (``crmhub incident notify``).
- :func:`clock`: hours from becoming aware to notifying (or to now). Flagged **late** when the
  notice went out more than :data:`CONTROLLER_WINDOW` (72 h) after crmhub became aware — the
  controller's own Art. 33(1) deadline would be gone had it been aware itself — and **overdue** when
  an incident is still not notified :data:`NOTIFY_TARGET` (24 h) after: crmhub's internal reading of
  "without undue delay", leaving the controller most of its 72 h.
- Every ``incident`` ledger event is owed in the same transaction as the rows it records and then
  appended once (:mod:`services.ledger_outbox`): an append that fails partway is finished by
  ``crmhub incident repair`` (or the next incident command), never doubled.
- :func:`incident_report`: what the controller needs for its own Art. 33(3) notification — nature,
  categories and approximate numbers of subjects and records, likely consequences and measures (free
  text given at open / :func:`update_incident`), the times.

Free text is the operator's description, never data: it is refused when it holds an e-mail address,
and it is kept out of notices and the ledger (they carry ids, counts, categories and field names).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sqlalchemy.engine import Engine

from governance.lineage import RunRef
from governance.registry import Registry
from schemas.errors import ConfigError
from schemas.lineage import DetailValue, EventKind, LineageEvent, format_timestamp
from services.incident_scope import Scope, TenantImpact, affected_tenants
from services.ledger_outbox import append_owed, owe
from services.notices import NoticeKind, enqueue_notice, list_contacts
from store import notices as store

__all__ = [
    "CONTROLLER_WINDOW",
    "NOTIFY_TARGET",
    "REPORT_FORMAT",
    "Clock",
    "Incident",
    "Nature",
    "Notified",
    "Signal",
    "clock",
    "get_incident",
    "incident_event",
    "incident_report",
    "list_incidents",
    "notify",
    "open_incident",
    "update_incident",
]

CONTROLLER_WINDOW: Final = timedelta(hours=72)
NOTIFY_TARGET: Final = timedelta(hours=24)
REPORT_FORMAT: Final = "crmhub.incident.report/1"
_REPEAT: Final = timedelta(days=3650)  # a breach notice is found again, never throttled by time
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TEXT_LIMIT: Final = {"summary": 255, "consequences": 2000, "measures": 2000}


class Nature(StrEnum):
    """What happened to the data (Art. 4(12): destruction, loss, alteration, disclosure, access)."""

    UNAUTHORIZED_ACCESS = "unauthorized_access"
    DISCLOSURE = "disclosure"
    LOSS = "loss"
    ALTERATION = "alteration"
    DESTRUCTION = "destruction"


class Signal(StrEnum):
    """How crmhub became aware."""

    MANUAL = "manual"
    LEAKED_CREDENTIAL = "leaked_credential"
    LEDGER_VERIFICATION_FAILED = "ledger_verification_failed"
    CODEC_TOKEN_MISUSE = "codec_token_misuse"  # noqa: S105 (a signal's name, not a secret)


@dataclass(frozen=True, slots=True)
class Clock:
    """Hours from becoming aware to notifying (``notified``) or to now (``open``), and the flag."""

    state: str
    hours: float
    late: bool
    overdue: bool

    @property
    def flag(self) -> str:
        if self.late:
            return f"LATE: notified {self.hours:.1f} h after becoming aware (over 72 h)"
        if self.overdue:
            return f"OVERDUE: not notified {self.hours:.1f} h after becoming aware (target 24 h)"
        return ""


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident and the tenants it concerns."""

    row: store.IncidentRow
    tenants: tuple[store.IncidentTenantRow, ...]


@dataclass(frozen=True, slots=True)
class Notified:
    """One tenant's outcome of :func:`notify`: its notice, contacts, and whether it was done before."""

    tenant: str
    notice_id: str | None
    contacts: int
    already: bool
    notified: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


def clock(became_aware: datetime, notified: datetime | None, now: datetime) -> Clock:
    """See the module docstring: late past 72 h when notified, overdue past 24 h while open."""
    hours = ((notified or now) - became_aware).total_seconds() / 3600
    if notified is not None:
        return Clock("notified", hours, hours > CONTROLLER_WINDOW.total_seconds() / 3600, False)
    return Clock("open", hours, False, hours > NOTIFY_TARGET.total_seconds() / 3600)


def _text(value: str, name: str) -> str:
    value = value.strip()
    limit = _TEXT_LIMIT[name]
    if len(value) > limit:
        raise ConfigError(f"--{name} is {len(value)} characters; say it in at most {limit}")
    if _EMAIL.search(value):
        # Not echoed: the address is what must not be stored.
        raise ConfigError(f"--{name} holds an e-mail address; describe the breach, never quote its data")
    return value


def incident_event(
    tenant: str, incident_id: str, step: str, *, at: datetime, counts: dict[str, int] | None = None,
    **details: DetailValue,
) -> LineageEvent:  # fmt: skip
    """An ``incident`` ledger event of ``tenant`` (``step``: became_aware, notified, updated)."""
    return RunRef(tenant=tenant, run_id=f"incident:{incident_id}").event(
        EventKind.INCIDENT, at=at, counts=counts or {},
        details={"step": step, "incident_id": incident_id, **details},
    )  # fmt: skip


def _aware_event(row: store.IncidentRow, impact: TenantImpact) -> LineageEvent:
    assert row.window_from is not None and row.window_to is not None
    return incident_event(
        impact.tenant, row.id, "became_aware", at=row.opened,
        counts={"subjects": impact.subjects, "records": impact.records, "events": impact.events},
        became_aware=format_timestamp(row.became_aware), signal=row.signal, nature=row.nature,
        window_from=format_timestamp(row.window_from), window_to=format_timestamp(row.window_to),
        subjects_basis=impact.subjects_basis, data_categories=",".join(impact.categories),
        fields=",".join(impact.fields), syncs=",".join(impact.syncs),
    )  # fmt: skip


def open_incident(
    engine: Engine,
    registry: Registry,
    scope: Scope,
    *,
    nature: Nature | str,
    signal: Signal | str = Signal.MANUAL,
    summary: str,
    consequences: str = "",
    measures: str = "",
    became_aware: datetime | None = None,
    now: datetime | None = None,
    always: tuple[str, ...] = (),
    finding: dict[str, str] | None = None,
) -> Incident:
    """Open an incident over ``scope``; the affected tenants come from lineage. ``became_aware``
    (default ``now``) may not lie in the future. Every affected tenant's ledger gets
    ``step=became_aware``. An incident that touches no tenant's data is still recorded; ``always``
    names tenants concerned even without a data event in scope (their ledger is what broke);
    ``finding`` (ids and a rule name, no secret) is kept in the scope so a detection signal finds the
    incident it already opened."""
    at = now or _now()
    aware = became_aware or at
    if aware.tzinfo is None:
        raise ConfigError("--aware must carry a timezone (e.g. 2026-12-07T10:00:00Z)")
    if aware > at:
        raise ConfigError(
            f"--aware ({format_timestamp(aware)}) lies in the future; give when crmhub became aware"
        )
    try:
        kind, how = Nature(nature), Signal(signal)
    except ValueError as exc:
        raise ConfigError(
            f"{exc}: --nature is one of {', '.join(n.value for n in Nature)}; "
            f"--signal one of {', '.join(s.value.replace('_', '-') for s in Signal)}"
        ) from None
    summary = _text(summary, "summary")
    if not summary:
        raise ConfigError("--summary must say what happened (1 to 255 characters, no data)")
    impacts = affected_tenants(engine, registry, scope, always=always)
    row = store.IncidentRow(
        id=f"inc-{at:%Y%m%d}-{uuid.uuid4().hex[:8]}", signal=how.value, summary=summary,
        became_aware=aware, opened=at, nature=kind.value, window_from=scope.start, window_to=scope.end,
        scope={**scope.as_dict(), **({"finding": finding} if finding else {})},
        consequences=_text(consequences, "consequences"),
        measures=_text(measures, "measures"),
    )  # fmt: skip
    tenants = [
        store.IncidentTenantRow(
            row.id, i.tenant, i.subjects, i.categories, None, None, i.records, i.subjects_basis,
            i.fields, i.syncs,
        )
        for i in impacts
    ]  # fmt: skip
    with engine.begin() as conn:
        store.add_incident(conn, row)
        for t in tenants:
            store.add_incident_tenant(conn, t)
        owe(conn, row.id, "became_aware", [_aware_event(row, i) for i in impacts], now=at)
    append_owed(engine, ref=row.id, now=at)
    return Incident(row, tuple(tenants))


def get_incident(engine: Engine, incident_id: str) -> Incident:
    """The incident; :class:`ConfigError` naming ``crmhub incident list`` when there is none."""
    with engine.connect() as conn:
        row = store.get_incident(conn, incident_id)
        tenants = store.list_incident_tenants(conn, incident_id) if row else []
    if row is None:
        raise ConfigError(f"no incident {incident_id!r}; see: crmhub incident list")
    return Incident(row, tuple(tenants))


def list_incidents(engine: Engine, *, tenant: str | None = None) -> list[Incident]:
    """Every incident (those concerning ``tenant``), oldest first."""
    with engine.connect() as conn:
        rows = store.list_incidents(conn, tenant=tenant)
        return [Incident(r, tuple(store.list_incident_tenants(conn, r.id))) for r in rows]


def update_incident(
    engine: Engine,
    incident_id: str,
    *,
    summary: str | None = None,
    consequences: str | None = None,
    measures: str | None = None,
    now: datetime | None = None,
) -> Incident:
    """Replace the free text given; each tenant's ledger gets ``step=updated`` naming the parts
    changed (the text stays out of the ledger)."""
    at = now or _now()
    current = get_incident(engine, incident_id)
    given = {"summary": summary, "consequences": consequences, "measures": measures}
    changed = {k: _text(v, k) for k, v in given.items() if v is not None}
    if not changed:
        raise ConfigError("give at least one of --summary, --consequences, --measures")
    if "summary" in changed and not changed["summary"]:
        raise ConfigError("--summary must say what happened (1 to 255 characters, no data)")
    r = current.row
    with engine.begin() as conn:
        store.update_incident(
            conn, incident_id, summary=changed.get("summary", r.summary),
            consequences=changed.get("consequences", r.consequences),
            measures=changed.get("measures", r.measures), now=at,
        )  # fmt: skip
        events = [
            incident_event(t.tenant, incident_id, "updated", at=at, changed=",".join(sorted(changed)))
            for t in current.tenants
        ]
        owe(conn, incident_id, f"updated@{format_timestamp(at)}", events, now=at)
    append_owed(engine, ref=incident_id, now=at)
    return get_incident(engine, incident_id)


def _facts(row: store.IncidentRow, t: store.IncidentTenantRow) -> dict[str, DetailValue]:
    """The notice's facts: ids, times, counts, categories (no free text, no field values)."""
    categories = ",".join(c.replace(" ", "_") for c in t.categories)
    if len(categories) > 200:
        categories = categories[:200].rsplit(",", 1)[0]
    assert row.window_from is not None and row.window_to is not None
    return {
        "incident_id": row.id, "nature": row.nature, "signal": row.signal,
        "became_aware": format_timestamp(row.became_aware), "window_from": format_timestamp(row.window_from),
        "window_to": format_timestamp(row.window_to), "subjects": t.subjects,
        "subjects_basis": t.subjects_basis, "records": t.records, "data_categories": categories,
        "fields": len(t.fields), "syncs": ",".join(t.syncs)[:200],
    }  # fmt: skip


def notify(engine: Engine, incident_id: str, *, now: datetime | None = None) -> list[Notified]:
    """Notify every affected tenant not notified yet (see the module docstring); per tenant what
    happened. :class:`ConfigError` when the incident concerns no tenant."""
    at = now or _now()
    incident = get_incident(engine, incident_id)
    if not incident.tenants:
        raise ConfigError(
            f"incident {incident_id} concerns no tenant's data: there is no controller to notify"
        )
    out: list[Notified] = []
    for t in incident.tenants:
        if t.notified is not None:
            out.append(Notified(t.tenant, t.notice_id, 0, True, t.notified))
            continue
        contacts = len(list_contacts(engine, t.tenant))
        if not contacts:
            out.append(Notified(t.tenant, None, 0, False, None))
            continue
        sent = enqueue_notice(
            engine, tenant=t.tenant, kind=NoticeKind.BREACH, facts=_facts(incident.row, t),
            subject=incident_id, throttle=_REPEAT, now=at,
        )  # fmt: skip
        c = clock(incident.row.became_aware, at, at)
        event = incident_event(
            t.tenant, incident_id, "notified", at=at, notice_id=sent.notice_id,
            became_aware=format_timestamp(incident.row.became_aware), notified=format_timestamp(at),
            minutes_to_notify=int(c.hours * 60), late=c.late, contacts=sent.contacts,
        )  # fmt: skip
        with engine.begin() as conn:
            store.mark_incident_notified(conn, incident_id, t.tenant, notice_id=sent.notice_id, now=at)
            owe(conn, incident_id, "notified", [event], now=at)
        append_owed(engine, ref=incident_id, now=at)
        out.append(Notified(t.tenant, sent.notice_id, sent.contacts, False, at))
    return out


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def incident_report(
    incident: Incident, *, tenant: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The Art. 33(3) report (format :data:`REPORT_FORMAT`); with ``tenant``, only that controller's
    part (no other tenant is named). :class:`ConfigError` if the incident does not concern ``tenant``."""
    at = now or _now()
    r = incident.row
    rows = [t for t in incident.tenants if tenant is None or t.tenant == tenant]
    if tenant is not None and not rows:
        raise ConfigError(f"incident {r.id} does not concern tenant {tenant!r}")
    parts = []
    for t in rows:
        c = clock(r.became_aware, t.notified, at)
        parts.append(
            {
                "tenant": t.tenant, "subjects": t.subjects, "subjects_basis": t.subjects_basis,
                "records": t.records, "data_categories": list(t.categories), "fields": list(t.fields),
                "syncs": list(t.syncs), "notice_id": t.notice_id, "notified": _ts(t.notified),
                "clock": {"state": c.state, "hours": round(c.hours, 2), "late": c.late, "overdue": c.overdue,
                          "flag": c.flag},
                # The controller is aware once its processor told it, so its 72 h start then (EDPB Guidelines
                # 9/2022 II.A.4 "Processor obligations", wording recalled, not verified: a guess).
                "controller_deadline": _ts(t.notified + CONTROLLER_WINDOW) if t.notified else None,
            }
        )  # fmt: skip
    scope = dict(r.scope or {})
    if tenant is not None:  # another tenant's ids (tenants, connections) are not the controller's to see
        used = [k for k in ("tenants", "syncs", "connections") if scope.get(k)]
        scope = {"from": scope.get("from"), "to": scope.get("to"), "subprocessor": scope.get("subprocessor"),
                 "tenants": [tenant], "filtered_by": used}  # fmt: skip
    return {
        "format": REPORT_FORMAT, "incident": r.id, "nature": r.nature, "signal": r.signal,
        "summary": r.summary, "likely_consequences": r.consequences, "measures": r.measures,
        "became_aware": _ts(r.became_aware), "opened": _ts(r.opened), "updated": _ts(r.updated),
        "window": {"from": _ts(r.window_from), "to": _ts(r.window_to)}, "scope": scope,
        "totals": {"tenants": len(parts), "subjects": sum(p["subjects"] for p in parts),
                   "records": sum(p["records"] for p in parts)},
        "tenants": parts,
        "ledger": "each tenant's ledger holds incident events (run id incident:<id>) step=became_aware "
                  "and step=notified; verify them in the signed ledger report",
    }  # fmt: skip
