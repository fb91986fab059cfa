"""Controller notices (migration ``0015_notices``): a tenant's contacts, the notices crmhub sends them,
each delivery's state, and breach incidents with the tenants they concern.

- ``notice_contacts``: an e-mail address or a webhook URL, *sealed* by the vault (a contact's address
  is personal data), and for a webhook its signing secret, sealed too; ``label`` is a short
  non-personal name ("dpo", "ops-webhook").
- ``notices``: what was said, as ``facts`` (ids, counts, categories: never PII, checked by
  :mod:`services.notices`); ``throttle_key`` groups repeats of one subject.
- ``notice_deliveries``: one row per notice and contact; ``attempts`` counts sends.
- ``incidents`` / ``incident_tenants``: an Art. 33 breach, when crmhub became aware, and per affected
  tenant the scope computed from lineage and the notice that told it. Migration ``0021_incidents``
  added the nature, window and requested scope, the free-text consequences and measures, and per
  tenant the record count, how subjects were counted, the fields (names) and syncs concerned.

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    and_,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import as_bytes, aware, required_aware, table_of

__all__ = [
    "ContactRow",
    "DeliveryRow",
    "IncidentRow",
    "IncidentTenantRow",
    "NoticeRow",
    "add_contact",
    "add_incident",
    "add_incident_tenant",
    "contacts",
    "deliveries",
    "get_contact",
    "get_incident",
    "get_notice",
    "incident_tenants",
    "incidents",
    "insert_notice",
    "last_notice",
    "list_contacts",
    "list_deliveries",
    "list_incident_tenants",
    "list_incidents",
    "mark_incident_notified",
    "notices",
    "pending_notice_ids",
    "record_attempt",
    "remove_contact",
    "update_incident",
]


class NoticeContactTable(SQLModel, table=True):
    """Declaration of ``notice_contacts``."""

    __tablename__ = "notice_contacts"
    __table_args__ = (PrimaryKeyConstraint("tenant", "id", name="pk_notice_contacts"),)

    tenant: str = Field(sa_type=String(128), primary_key=True)
    id: str = Field(sa_type=String(64), primary_key=True)
    channel: str = Field(sa_type=String(16))
    label: str = Field(sa_type=String(64))
    target_sealed: bytes = Field(sa_type=LargeBinary)
    secret_sealed: bytes | None = Field(default=None, sa_type=LargeBinary, nullable=True)
    created: datetime = Field(sa_type=DateTime(timezone=True))


class NoticeTable(SQLModel, table=True):
    """Declaration of ``notices``."""

    __tablename__ = "notices"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_notices"),
        Index("ix_notices_throttle", "tenant", "kind", "throttle_key", "created"),
    )

    id: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    kind: str = Field(sa_type=String(64))
    throttle_key: str = Field(sa_type=String(255))
    facts: dict[str, Any] = Field(sa_type=JSON)
    created: datetime = Field(sa_type=DateTime(timezone=True))


class NoticeDeliveryTable(SQLModel, table=True):
    """Declaration of ``notice_deliveries``."""

    __tablename__ = "notice_deliveries"
    __table_args__ = (PrimaryKeyConstraint("notice_id", "contact_id", name="pk_notice_deliveries"),)

    notice_id: str = Field(sa_type=String(64), primary_key=True)
    contact_id: str = Field(sa_type=String(64), primary_key=True)
    status: str = Field(sa_type=String(16))
    attempts: int = Field(sa_type=Integer)
    last_error: str = Field(sa_type=String(255))
    delivered: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


class IncidentTable(SQLModel, table=True):
    """Declaration of ``incidents``."""

    __tablename__ = "incidents"
    __table_args__ = (PrimaryKeyConstraint("id", name="pk_incidents"),)

    id: str = Field(sa_type=String(64), primary_key=True)
    signal: str = Field(sa_type=String(64))
    summary: str = Field(sa_type=String(255))
    became_aware: datetime = Field(sa_type=DateTime(timezone=True))
    opened: datetime = Field(sa_type=DateTime(timezone=True))
    # 0021_incidents: nature, window and scope opened over, the controller's Art. 33(3) free text
    nature: str = Field(default="", sa_type=String(32), sa_column_kwargs={"server_default": ""})
    window_from: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)
    window_to: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)
    scope: dict[str, Any] | None = Field(default=None, sa_type=JSON, nullable=True)
    consequences: str = Field(default="", sa_type=String(2000), sa_column_kwargs={"server_default": ""})
    measures: str = Field(default="", sa_type=String(2000), sa_column_kwargs={"server_default": ""})
    updated: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


class IncidentTenantTable(SQLModel, table=True):
    """Declaration of ``incident_tenants``."""

    __tablename__ = "incident_tenants"
    __table_args__ = (PrimaryKeyConstraint("incident_id", "tenant", name="pk_incident_tenants"),)

    incident_id: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(128), primary_key=True)
    subjects: int = Field(sa_type=Integer)
    categories: list[str] = Field(sa_type=JSON)
    notice_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    notified: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)
    # 0021_incidents: records, how subjects were counted, fields (names) and syncs concerned
    records: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": "0"})
    subjects_basis: str = Field(
        default="keyed_hashes", sa_type=String(16), sa_column_kwargs={"server_default": "keyed_hashes"}
    )
    fields: list[str] | None = Field(default=None, sa_type=JSON, nullable=True)
    syncs: list[str] | None = Field(default=None, sa_type=JSON, nullable=True)


contacts = table_of(NoticeContactTable)
notices = table_of(NoticeTable)
deliveries = table_of(NoticeDeliveryTable)
incidents = table_of(IncidentTable)
incident_tenants = table_of(IncidentTenantTable)


@dataclass(frozen=True, slots=True)
class ContactRow:
    tenant: str
    id: str
    channel: str
    label: str
    target_sealed: bytes
    secret_sealed: bytes | None
    created: datetime


@dataclass(frozen=True, slots=True)
class NoticeRow:
    id: str
    tenant: str
    kind: str
    throttle_key: str
    facts: dict[str, Any]
    created: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    notice_id: str
    contact_id: str
    status: str
    attempts: int
    last_error: str
    delivered: datetime | None


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: str
    signal: str
    summary: str
    became_aware: datetime
    opened: datetime
    nature: str = ""
    window_from: datetime | None = None
    window_to: datetime | None = None
    scope: dict[str, Any] | None = None
    consequences: str = ""
    measures: str = ""
    updated: datetime | None = None


@dataclass(frozen=True, slots=True)
class IncidentTenantRow:
    incident_id: str
    tenant: str
    subjects: int
    categories: tuple[str, ...]
    notice_id: str | None
    notified: datetime | None
    records: int = 0
    subjects_basis: str = "keyed_hashes"
    fields: tuple[str, ...] = ()
    syncs: tuple[str, ...] = ()


def _contact(m: Any) -> ContactRow:
    target = as_bytes(m["target_sealed"])
    assert target is not None  # NOT NULL
    return ContactRow(
        m["tenant"], m["id"], m["channel"], m["label"], target, as_bytes(m["secret_sealed"]),
        required_aware(m["created"]),
    )  # fmt: skip


def add_contact(conn: Connection, row: ContactRow) -> None:
    conn.execute(
        contacts.insert().values(
            tenant=row.tenant, id=row.id, channel=row.channel, label=row.label,
            target_sealed=row.target_sealed, secret_sealed=row.secret_sealed, created=row.created,
        )
    )  # fmt: skip


def list_contacts(conn: Connection, tenant: str) -> list[ContactRow]:
    q = select(contacts).where(contacts.c.tenant == tenant).order_by(contacts.c.created, contacts.c.id)
    return [_contact(m) for m in conn.execute(q).mappings()]


def get_contact(conn: Connection, tenant: str, contact_id: str) -> ContactRow | None:
    q = select(contacts).where(contacts.c.tenant == tenant, contacts.c.id == contact_id)
    m = conn.execute(q).mappings().first()
    return None if m is None else _contact(m)


def remove_contact(conn: Connection, tenant: str, contact_id: str) -> bool:
    q = delete(contacts).where(contacts.c.tenant == tenant, contacts.c.id == contact_id)
    return conn.execute(q).rowcount > 0


def _notice(m: Any) -> NoticeRow:
    return NoticeRow(
        m["id"], m["tenant"], m["kind"], m["throttle_key"], dict(m["facts"]), required_aware(m["created"])
    )


def insert_notice(conn: Connection, row: NoticeRow, contact_ids: Sequence[str]) -> None:
    """The notice and a pending delivery to each of ``contact_ids``."""
    conn.execute(
        notices.insert().values(
            id=row.id, tenant=row.tenant, kind=row.kind, throttle_key=row.throttle_key,
            facts=row.facts, created=row.created,
        )
    )  # fmt: skip
    if contact_ids:
        conn.execute(
            deliveries.insert(),
            [
                {"notice_id": row.id, "contact_id": c, "status": "pending", "attempts": 0, "last_error": ""}
                for c in contact_ids
            ],
        )


def get_notice(conn: Connection, notice_id: str) -> NoticeRow | None:
    m = conn.execute(select(notices).where(notices.c.id == notice_id)).mappings().first()
    return None if m is None else _notice(m)


def last_notice(
    conn: Connection, tenant: str, kind: str, throttle_key: str, *, since: datetime
) -> NoticeRow | None:
    """The newest notice of this tenant, kind and key created at or after ``since``."""
    q = (
        select(notices)
        .where(
            notices.c.tenant == tenant,
            notices.c.kind == kind,
            notices.c.throttle_key == throttle_key,
            notices.c.created >= since,
        )
        .order_by(notices.c.created.desc())
        .limit(1)
    )
    m = conn.execute(q).mappings().first()
    return None if m is None else _notice(m)


def list_deliveries(conn: Connection, notice_id: str) -> list[DeliveryRow]:
    q = select(deliveries).where(deliveries.c.notice_id == notice_id).order_by(deliveries.c.contact_id)
    return [
        DeliveryRow(
            m["notice_id"],
            m["contact_id"],
            m["status"],
            m["attempts"],
            m["last_error"],
            aware(m["delivered"]),
        )
        for m in conn.execute(q).mappings()
    ]


def pending_notice_ids(conn: Connection, *, after: str = "", limit: int) -> list[str]:
    """Up to ``limit`` ids of notices with a delivery not yet made to a contact that still exists,
    oldest first (by creation, then id), strictly after the notice ``after`` in that order."""
    undelivered = exists().where(
        deliveries.c.notice_id == notices.c.id,
        deliveries.c.status != "delivered",
        contacts.c.tenant == notices.c.tenant,
        contacts.c.id == deliveries.c.contact_id,
    )
    q = select(notices.c.id).where(undelivered)
    if after:
        since = select(notices.c.created).where(notices.c.id == after).scalar_subquery()
        q = q.where(or_(notices.c.created > since, and_(notices.c.created == since, notices.c.id > after)))
    q = q.order_by(notices.c.created, notices.c.id).limit(limit)
    return [str(i) for i in conn.execute(q).scalars()]


def record_attempt(
    conn: Connection, notice_id: str, contact_id: str, *, ok: bool, error: str, now: datetime
) -> int:
    """Count one send; returns the attempt number (1 for the first)."""
    m = (
        conn.execute(
            select(deliveries.c.attempts).where(
                deliveries.c.notice_id == notice_id, deliveries.c.contact_id == contact_id
            )
        )
        .mappings()
        .first()
    )
    attempts = (0 if m is None else int(m["attempts"])) + 1
    conn.execute(
        update(deliveries)
        .where(deliveries.c.notice_id == notice_id, deliveries.c.contact_id == contact_id)
        .values(
            attempts=attempts,
            status="delivered" if ok else "retrying",
            last_error=error[:255],
            delivered=now if ok else None,
        )
    )
    return attempts


def add_incident(conn: Connection, row: IncidentRow) -> None:
    conn.execute(
        incidents.insert().values(
            id=row.id, signal=row.signal, summary=row.summary, became_aware=row.became_aware,
            opened=row.opened, nature=row.nature, window_from=row.window_from, window_to=row.window_to,
            scope=row.scope, consequences=row.consequences, measures=row.measures, updated=row.updated,
        )
    )  # fmt: skip


def update_incident(
    conn: Connection, incident_id: str, *, summary: str, consequences: str, measures: str, now: datetime
) -> None:
    """Replace the incident's free text (what the controller's Art. 33(3) report quotes)."""
    conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id)
        .values(summary=summary, consequences=consequences, measures=measures, updated=now)
    )


def _incident(m: Any) -> IncidentRow:
    return IncidentRow(
        m["id"], m["signal"], m["summary"], required_aware(m["became_aware"]), required_aware(m["opened"]),
        m["nature"], aware(m["window_from"]), aware(m["window_to"]),
        None if m["scope"] is None else dict(m["scope"]), m["consequences"], m["measures"],
        aware(m["updated"]),
    )  # fmt: skip


def get_incident(conn: Connection, incident_id: str) -> IncidentRow | None:
    m = conn.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
    return None if m is None else _incident(m)


def list_incidents(conn: Connection, *, tenant: str | None = None) -> list[IncidentRow]:
    """Every incident, oldest first; with ``tenant``, only those that concern it."""
    q = select(incidents).order_by(incidents.c.opened, incidents.c.id)
    if tenant is not None:
        concerned = select(incident_tenants.c.incident_id).where(incident_tenants.c.tenant == tenant)
        q = q.where(incidents.c.id.in_(concerned))
    return [_incident(m) for m in conn.execute(q).mappings()]


def add_incident_tenant(conn: Connection, row: IncidentTenantRow) -> None:
    conn.execute(
        incident_tenants.insert().values(
            incident_id=row.incident_id, tenant=row.tenant, subjects=row.subjects,
            categories=list(row.categories), notice_id=row.notice_id, notified=row.notified,
            records=row.records, subjects_basis=row.subjects_basis, fields=list(row.fields),
            syncs=list(row.syncs),
        )
    )  # fmt: skip


def list_incident_tenants(conn: Connection, incident_id: str) -> list[IncidentTenantRow]:
    q = (
        select(incident_tenants)
        .where(incident_tenants.c.incident_id == incident_id)
        .order_by(incident_tenants.c.tenant)
    )
    return [
        IncidentTenantRow(
            m["incident_id"], m["tenant"], m["subjects"], tuple(m["categories"]), m["notice_id"],
            aware(m["notified"]), m["records"], m["subjects_basis"], tuple(m["fields"] or ()),
            tuple(m["syncs"] or ()),
        )
        for m in conn.execute(q).mappings()
    ]  # fmt: skip


def mark_incident_notified(
    conn: Connection, incident_id: str, tenant: str, *, notice_id: str, now: datetime
) -> None:
    conn.execute(
        update(incident_tenants)
        .where(incident_tenants.c.incident_id == incident_id, incident_tenants.c.tenant == tenant)
        .values(notice_id=notice_id, notified=now)
    )
