"""Controller notices against a real local SMTP server (aiosmtpd) and a loopback webhook receiver."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from governance.lineage import Ledger
from governance.vault import Vault
from schemas.errors import ConfigError, TransientError
from schemas.lineage import EventKind, LineageEvent
from schemas.settings import NoticeSettings
from services import notices, webhook_signing
from store import notices as notice_store
from tests.notice_support import SmtpServer, WebhookReceiver, acme_vault

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ADDRESS = "dpo@controller.example"


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return acme_vault(db_engine, tmp_path, T0)


def _notice_events(engine: Engine, tenant: str = "acme") -> list[LineageEvent]:
    ledger = Ledger(engine, tenant)
    events = ledger.read_events()
    return [e for e in events if e.kind is EventKind.NOTICE]


def _config(smtp: SmtpServer) -> NoticeSettings:
    return NoticeSettings(smtp_port=smtp.port, timeout_s=5)


def test_an_email_notice_is_delivered_once_per_throttle_window_and_ledgered(
    db_engine: Engine, vault: Vault, smtp: SmtpServer
) -> None:
    contact, secret = notices.add_contact(db_engine, vault, "acme", label="dpo", email=ADDRESS, now=T0)
    assert secret is None
    facts: dict[str, str | int | bool | None] = {"sync_id": "s1", "run_id": "run-1", "failed_records": 3}
    first = notices.enqueue_notice(
        db_engine, tenant="acme", kind="run_failed", facts=facts, subject="s1", now=T0
    )
    again = notices.enqueue_notice(
        db_engine, tenant="acme", kind="run_failed", facts=facts, subject="s1", now=T0 + timedelta(minutes=5)
    )
    assert (first.throttled, first.contacts) == (False, 1)
    assert (again.throttled, again.notice_id) == (True, first.notice_id)
    assert notices.pending_deliveries(db_engine, first.notice_id) == [contact.id]
    assert notices.deliver(db_engine, vault, _config(smtp), first.notice_id, contact.id, now=T0) == 1
    assert notices.deliver(db_engine, vault, _config(smtp), first.notice_id, contact.id, now=T0) == 0
    assert smtp.handler.recipients == [ADDRESS]
    (mail,) = smtp.handler.messages
    assert first.notice_id in mail["Subject"]
    text = mail.get_payload()
    assert isinstance(text, str) and "failed_records: 3" in text
    later = notices.enqueue_notice(
        db_engine, tenant="acme", kind="run_failed", facts=facts, subject="s1", now=T0 + timedelta(hours=2)
    )
    assert not later.throttled and later.notice_id != first.notice_id
    phases = [(e.details["notice_id"], e.details["phase"]) for e in _notice_events(db_engine)]
    assert phases == [
        (first.notice_id, "enqueued"), (first.notice_id, "delivered"), (later.notice_id, "enqueued")
    ]  # fmt: skip
    assert all(ADDRESS not in e.canonical_bytes().decode() for e in _notice_events(db_engine))


def test_the_address_is_sealed_in_the_database(db_engine: Engine, vault: Vault) -> None:
    notices.add_contact(db_engine, vault, "acme", label="dpo", email=ADDRESS, now=T0)
    with db_engine.connect() as conn:
        (sealed,) = conn.execute(select(notice_store.contacts.c.target_sealed)).scalars()
    assert ADDRESS.encode() not in bytes(sealed)
    assert [c.label for c in notices.list_contacts(db_engine, "acme")] == ["dpo"]


def test_smtp_down_then_up_retries_and_each_attempt_is_ledgered(db_engine: Engine, vault: Vault) -> None:
    smtp = SmtpServer()  # not started: the relay is down
    contact, _ = notices.add_contact(db_engine, vault, "acme", label="dpo", email=ADDRESS, now=T0)
    sent = notices.enqueue_notice(db_engine, tenant="acme", kind="reauthorization_needed", facts={}, now=T0)
    with pytest.raises(TransientError) as failed:
        notices.deliver(db_engine, vault, _config(smtp), sent.notice_id, contact.id, now=T0)
    assert ADDRESS not in str(failed.value)
    smtp.start()
    try:
        assert notices.deliver(db_engine, vault, _config(smtp), sent.notice_id, contact.id, now=T0) == 2
    finally:
        smtp.stop()
    assert len(smtp.handler.messages) == 1
    attempts = [(e.details["phase"], e.details.get("attempt")) for e in _notice_events(db_engine)]
    assert attempts == [("enqueued", None), ("delivery_failed", 1), ("delivered", 2)]


def test_a_webhook_notice_is_signed_and_verified_and_a_replay_is_refused(
    db_engine: Engine, vault: Vault, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    contact, secret = notices.add_contact(
        db_engine, vault, "acme", label="ops-hook", webhook_url=receiver.url
    )
    assert secret is not None and secret.startswith("whsec_")
    receiver.secret = secret
    sent = notices.enqueue_notice(
        db_engine, tenant="acme", kind="instruction_infringement", facts={"field": "Contact.Email"}
    )
    assert notices.deliver(db_engine, vault, NoticeSettings(), sent.notice_id, contact.id) == 1
    ((msg_id, body),) = receiver.accepted
    # httpx logs each request at INFO: the line stays, the URL (a sealed contact target) does not
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == [
        "HTTP request to a notice webhook (URL withheld)"
    ]
    assert msg_id == sent.notice_id
    doc = json.loads(body)
    assert (doc["type"], doc["facts"]) == (
        "crmhub.notice.instruction_infringement",
        {"field": "Contact.Email"},
    )
    now = int(time.time())
    headers = webhook_signing.signed_headers(secret, msg_id, now, body)
    replay = httpx.post(receiver.url, content=body, headers=headers)
    tampered = httpx.post(receiver.url, content=body + b" ", headers=headers)
    stale = httpx.post(
        receiver.url, content=body, headers=webhook_signing.signed_headers(secret, "ntc_x", now - 301, body)
    )
    assert [replay.status_code, tampered.status_code, stale.status_code] == [401, 401, 401]
    assert receiver.rejected == ["replayed", "no_matching_signature", "timestamp_out_of_tolerance"]
    assert secret not in "".join(e.canonical_bytes().decode() for e in _notice_events(db_engine))


def test_a_webhook_answering_500_is_a_retryable_failure(
    db_engine: Engine, vault: Vault, receiver: WebhookReceiver
) -> None:
    contact, _ = notices.add_contact(db_engine, vault, "acme", label="hook", webhook_url=receiver.url)
    receiver.secret = webhook_signing.new_secret()  # not the contact's: the receiver refuses (401)
    sent = notices.enqueue_notice(db_engine, tenant="acme", kind="run_refused", facts={"sync_id": "s1"})
    with pytest.raises(TransientError, match="notice_webhook_status"):
        notices.deliver(db_engine, vault, NoticeSettings(), sent.notice_id, contact.id)
    assert receiver.rejected == ["no_matching_signature"]


@pytest.mark.parametrize(
    ("facts", "word"),
    [({"who": "dpo@controller.example"}, "who"), ({"name": "Jane Doe"}, "name"), ({"Bad-Key": 1}, "Bad-Key")],
)
def test_a_notice_refuses_facts_that_could_be_personal_data(
    db_engine: Engine, vault: Vault, facts: dict[str, str | int], word: str
) -> None:
    with pytest.raises(ConfigError, match=word) as refused:
        notices.enqueue_notice(db_engine, tenant="acme", kind="breach", facts=facts)
    assert "controller.example" not in str(refused.value) and "Jane" not in str(refused.value)


def test_contacts_need_exactly_one_channel_and_a_role_label(db_engine: Engine, vault: Vault) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        notices.add_contact(db_engine, vault, "acme", label="dpo")
    with pytest.raises(ConfigError, match="label"):
        notices.add_contact(db_engine, vault, "acme", label="Jane Doe", email=ADDRESS)
    with pytest.raises(ConfigError, match="--webhook"):
        notices.add_contact(db_engine, vault, "acme", label="hook", webhook_url="ftp://x")
    with pytest.raises(ConfigError, match="no contact"):
        notices.remove_contact(db_engine, "acme", "ct_missing")
