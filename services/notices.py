"""Notices to the controller: its contacts, :func:`enqueue_notice` (throttled) and one delivery.

The reusable surface (other features call it; keep these signatures):

- :func:`enqueue_notice` records a notice for a tenant and a pending delivery to each of its
  contacts, unless one of the same kind and ``subject`` was enqueued within ``throttle``; it
  appends a ``notice`` ledger event (``phase=enqueued``) either way it sends — a throttled repeat
  writes nothing and returns the earlier notice with ``throttled=True``.
- :func:`deliver` sends one notice to one contact (e-mail through the configured SMTP relay with
  :mod:`smtplib`, or a Standard Webhooks signed POST, :mod:`services.webhook_signing`) and appends a
  ``notice`` event per attempt (``phase=delivered`` or ``delivery_failed``); a failure raises
  :class:`~schemas.errors.TransientError` so the delivery workflow retries it.
- Every ``notice`` ledger event is owed in the transaction that records the notice or the attempt
  and then appended once (:mod:`services.ledger_outbox`): one left owed by a crash in between is
  appended by the notice's next delivery, the dispatch pass, ``crmhub incident repair`` or the
  ``crmhub-incident-watch`` schedule, never doubled.

What a notice may say: ``facts`` of ids, counts and categories only — an int, a bool, or a short
token of ``[A-Za-z0-9_.:,-]`` (no spaces, no ``@``), so a name or an e-mail address cannot slip in.
Contact addresses and webhook secrets are sealed by the vault; they never appear in an event, a
log, an exception or Temporal history (workflows pass notice and contact ids only).
"""

from __future__ import annotations

import json
import logging
import re
import smtplib
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import Engine

from governance.vault import Vault
from schemas.errors import ConfigError, TransientError
from schemas.lineage import DetailValue, EventKind, LineageEvent
from schemas.settings import NoticeSettings
from services import webhook_signing
from services.ledger_outbox import append_owed, owe
from store import notices as store

__all__ = [
    "DEFAULT_THROTTLE",
    "Channel",
    "Contact",
    "Enqueued",
    "NoticeKind",
    "add_contact",
    "check_facts",
    "deliver",
    "enqueue_notice",
    "list_contacts",
    "notice_payload",
    "pending_deliveries",
    "pending_notices",
    "remove_contact",
]

DEFAULT_THROTTLE: Final = timedelta(hours=1)
_PURPOSE: Final = "controller-notices"
_DATASET: Final = "notice_contacts"
_TOKEN = re.compile(r"[A-Za-z0-9_.:,\-]{0,200}")
_FACT_KEY = re.compile(r"[a-z][a-z0-9_]{0,47}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LABEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class NoticeKind(StrEnum):
    """Why crmhub tells the controller something."""

    RUN_FAILED = "run_failed"
    REAUTHORIZATION_NEEDED = "reauthorization_needed"
    RUN_REFUSED = "run_refused"
    INSTRUCTION_INFRINGEMENT = "instruction_infringement"  # Art. 28(3) last sentence
    BREACH = "breach"  # Art. 33(2)
    SUBPROCESSOR_CHANGE = "subprocessor_change"  # Art. 28(2)


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact as shown to people: no address (it stays sealed)."""

    id: str
    channel: Channel
    label: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The notice recorded (or, when ``throttled``, the earlier one that already said it)."""

    notice_id: str
    throttled: bool
    contacts: int


def _now() -> datetime:
    return datetime.now(UTC)


def check_facts(facts: Mapping[str, DetailValue]) -> dict[str, DetailValue]:
    """``facts`` if it holds only ids, counts and categories; else a :class:`ConfigError` naming the key."""
    out: dict[str, DetailValue] = {}
    for key, value in facts.items():
        if _FACT_KEY.fullmatch(key) is None:
            raise ConfigError(f"notice fact key {key[:48]!r} must be lowercase [a-z0-9_], ≤ 48 chars")
        if isinstance(value, str) and _TOKEN.fullmatch(value) is None:
            # The value is not echoed: it may be the personal data we refuse to send.
            raise ConfigError(
                f"notice fact {key!r} must be an id, count or category ([A-Za-z0-9_.:,-], no spaces or @)"
            )
        out[key] = value
    return out


def _seal(vault: Vault, tenant: str, contact_id: str, part: str, value: str) -> bytes:
    return vault.seal(
        tenant, value.encode(), dataset=_DATASET, object_id=f"{contact_id}:{part}", purpose=_PURPOSE
    )


def _open(vault: Vault, tenant: str, contact_id: str, part: str, sealed: bytes) -> str:
    return vault.open(
        tenant, sealed, dataset=_DATASET, object_id=f"{contact_id}:{part}", purpose=_PURPOSE
    ).decode()


def add_contact(
    engine: Engine,
    vault: Vault,
    tenant: str,
    *,
    label: str,
    email: str | None = None,
    webhook_url: str | None = None,
    now: datetime | None = None,
) -> tuple[Contact, str | None]:
    """Add one contact (exactly one of ``email`` / ``webhook_url``); returns it and, for a webhook,
    its new signing secret (shown once; stored sealed)."""
    if (email is None) == (webhook_url is None):
        raise ConfigError("give exactly one of --email or --webhook")
    if _LABEL.fullmatch(label) is None:
        raise ConfigError("contact label must be 1-64 chars of [A-Za-z0-9_.-] (a role, not a name)")
    contact_id = "ct_" + uuid.uuid4().hex[:16]
    secret: str | None = None
    if email is not None:
        if _EMAIL.fullmatch(email) is None:
            raise ConfigError("--email must be an address like dpo@example.org")
        channel, target = Channel.EMAIL, email
    else:
        assert webhook_url is not None
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError("--webhook must be an http(s) URL with a host")
        channel, target, secret = Channel.WEBHOOK, webhook_url, webhook_signing.new_secret()
    created = now or _now()
    row = store.ContactRow(
        tenant, contact_id, channel.value, label, _seal(vault, tenant, contact_id, "target", target),
        None if secret is None else _seal(vault, tenant, contact_id, "secret", secret), created,
    )  # fmt: skip
    with engine.begin() as conn:
        store.add_contact(conn, row)
    return Contact(contact_id, channel, label, created), secret


def list_contacts(engine: Engine, tenant: str) -> list[Contact]:
    with engine.connect() as conn:
        rows = store.list_contacts(conn, tenant)
    return [Contact(r.id, Channel(r.channel), r.label, r.created) for r in rows]


def remove_contact(engine: Engine, tenant: str, contact_id: str) -> None:
    with engine.begin() as conn:
        if not store.remove_contact(conn, tenant, contact_id):
            raise ConfigError(
                f"tenant {tenant!r} has no contact {contact_id!r}; see: crmhub tenant contacts list"
            )


def _event(
    tenant: str, notice_id: str, kind: str, phase: str, now: datetime, **details: DetailValue
) -> LineageEvent:
    return LineageEvent(
        kind=EventKind.NOTICE,
        tenant=tenant,
        run_id=f"notice:{notice_id}",
        timestamp=now,
        details={"notice_id": notice_id, "notice_kind": kind, "phase": phase, **details},
    )


def enqueue_notice(
    engine: Engine,
    *,
    tenant: str,
    kind: NoticeKind | str,
    facts: Mapping[str, DetailValue],
    subject: str = "",
    throttle: timedelta = DEFAULT_THROTTLE,
    now: datetime | None = None,
) -> Enqueued:
    """Record a notice of ``kind`` for ``tenant`` and a pending delivery to each contact.

    ``subject`` groups repeats (e.g. the sync id): a notice of the same tenant, kind and subject
    within ``throttle`` is not sent again (``throttled=True``, the earlier id). ``facts`` are checked
    by :func:`check_facts`. The ``notice`` ledger event carries the facts as ``fact_<key>``.
    Delivery happens in the ``NoticeDeliveryWorkflow`` (:mod:`workflows.notices`).
    """
    notice_kind = NoticeKind(kind).value
    checked = check_facts(facts)
    if _TOKEN.fullmatch(subject) is None:
        raise ConfigError("notice subject must be an id ([A-Za-z0-9_.:,-])")
    at = now or _now()
    with engine.begin() as conn:
        earlier = store.last_notice(conn, tenant, notice_kind, subject, since=at - throttle)
        if earlier is not None:
            return Enqueued(earlier.id, True, len(store.list_deliveries(conn, earlier.id)))
        contact_ids = [c.id for c in store.list_contacts(conn, tenant)]
        notice_id = "ntc_" + uuid.uuid4().hex
        store.insert_notice(
            conn, store.NoticeRow(notice_id, tenant, notice_kind, subject, checked, at), contact_ids
        )
        facts_detail = {f"fact_{k}": v for k, v in checked.items()}
        event = _event(
            tenant, notice_id, notice_kind, "enqueued", at, contacts=len(contact_ids), **facts_detail
        )
        owe(conn, notice_id, "enqueued", [event], now=at)
    append_owed(engine, ref=notice_id, now=at)
    return Enqueued(notice_id, False, len(contact_ids))


def pending_deliveries(engine: Engine, notice_id: str) -> list[str]:
    """Contact ids the notice has not reached yet, of contacts that still exist (a removed contact
    cannot be reached; the tenant's other contacts still are)."""
    with engine.connect() as conn:
        row = store.get_notice(conn, notice_id)
        if row is None:
            raise ConfigError(f"no notice {notice_id!r}")
        live = {c.id for c in store.list_contacts(conn, row.tenant)}
        return [
            d.contact_id
            for d in store.list_deliveries(conn, notice_id)
            if d.status != "delivered" and d.contact_id in live
        ]


def pending_notices(engine: Engine, *, after: str = "", limit: int = 50) -> list[str]:
    """Ids of notices some existing contact has not received yet, oldest first, at most ``limit``,
    after the notice ``after`` (a cursor: the last id of the previous page). Ids only: what the
    dispatch workflow (:mod:`workflows.notices`) starts a delivery for."""
    if not 1 <= limit <= 1000:
        raise ConfigError(f"pending notices limit {limit} must be 1-1000")
    with engine.connect() as conn:
        return store.pending_notice_ids(conn, after=after, limit=limit)


def notice_payload(row: store.NoticeRow) -> bytes:
    """The JSON body a webhook receives (and an e-mail carries): ids, kind, time, facts."""
    doc = {
        "type": f"crmhub.notice.{row.kind}",
        "id": row.id,
        "tenant": row.tenant,
        "created": row.created.astimezone(UTC).isoformat(),
        "facts": row.facts,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _send_email(config: NoticeSettings, to: str, row: store.NoticeRow, body: bytes) -> None:
    msg = EmailMessage()
    msg["From"] = config.sender
    msg["To"] = to
    msg["Subject"] = f"[crmhub] {row.kind} notice {row.id} (tenant {row.tenant})"
    msg["Message-ID"] = f"<{row.id}@crmhub>"
    lines = [f"crmhub notice {row.id}: {row.kind}", f"tenant: {row.tenant}", ""]
    lines += [f"{k}: {v}" for k, v in sorted(row.facts.items())]
    msg.set_content("\n".join(lines) + "\n\n" + body.decode())
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s) as smtp:
        if config.smtp_starttls:
            smtp.starttls()
        smtp.send_message(msg)


_POSTING_NOTICE: ContextVar[bool] = ContextVar("crmhub_posting_notice", default=False)


class _WithholdNoticeUrl(logging.Filter):
    """httpx logs every request's URL at INFO; a notice webhook's URL is a sealed contact target."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _POSTING_NOTICE.get():
            record.msg, record.args = "HTTP request to a notice webhook (URL withheld)", None
        return True


def _post_webhook(
    config: NoticeSettings, url: str, secret: str, row: store.NoticeRow, body: bytes, now: datetime
) -> None:
    headers = webhook_signing.signed_headers(secret, row.id, int(now.timestamp()), body)
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _WithholdNoticeUrl) for f in httpx_log.filters):
        httpx_log.addFilter(_WithholdNoticeUrl())
    posting = _POSTING_NOTICE.set(True)  # the filter runs in this thread, within this context
    try:
        with httpx.Client(timeout=config.timeout_s) as client:
            answer = client.post(url, content=body, headers=headers)
    finally:
        _POSTING_NOTICE.reset(posting)
    if not answer.is_success:
        raise TransientError(f"webhook answered HTTP {answer.status_code}", code="notice_webhook_status")


def deliver(
    engine: Engine,
    vault: Vault,
    config: NoticeSettings,
    notice_id: str,
    contact_id: str,
    *,
    now: datetime | None = None,
) -> int:
    """Send the notice to one contact; returns the attempt number. Already delivered: returns 0
    and sends nothing. A failure is recorded (ledger ``delivery_failed``) and raised as
    :class:`TransientError` (no address or secret in its message)."""
    at = now or _now()
    append_owed(engine, ref=notice_id, now=at)  # what an earlier attempt committed but did not append
    with engine.connect() as conn:
        row = store.get_notice(conn, notice_id)
        if row is None:
            raise ConfigError(f"no notice {notice_id!r}")
        done = {d.contact_id for d in store.list_deliveries(conn, notice_id) if d.status == "delivered"}
        contact = store.get_contact(conn, row.tenant, contact_id)
    if contact_id in done:
        return 0
    if contact is None:
        raise ConfigError(f"contact {contact_id!r} of tenant {row.tenant!r} was removed")
    body = notice_payload(row)
    error = ""
    try:
        target = _open(vault, row.tenant, contact_id, "target", contact.target_sealed)
        if contact.channel == Channel.EMAIL.value:
            _send_email(config, target, row, body)
        else:
            assert contact.secret_sealed is not None
            secret = _open(vault, row.tenant, contact_id, "secret", contact.secret_sealed)
            _post_webhook(config, target, secret, row, body, at)
    except TransientError as exc:
        error = exc.code or "notice_delivery_failed"
    except (OSError, smtplib.SMTPException, httpx.HTTPError) as exc:
        # The class only: smtplib's messages can quote the recipient address.
        error = type(exc).__name__
    phase = "delivery_failed" if error else "delivered"
    with engine.begin() as conn:
        attempt = store.record_attempt(conn, notice_id, contact_id, ok=not error, error=error, now=at)
        details: dict[str, DetailValue] = {
            "contact_id": contact_id,
            "channel": contact.channel,
            "attempt": attempt,
        }
        if error:
            details["error"] = error
        event = _event(row.tenant, notice_id, row.kind, phase, at, **details)
        owe(conn, notice_id, f"{phase}:{contact_id}:{attempt}", [event], now=at)
    append_owed(engine, ref=notice_id, now=at)
    if error:
        raise TransientError(f"notice {notice_id} to {contact_id}: {error}", code="notice_delivery_failed")
    return attempt
