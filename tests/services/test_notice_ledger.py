"""Crash-safe ``notice`` ledger events on the database of ``db_url`` (SQLite and PostgreSQL), with a
real local SMTP server: a failure injected after the notice's commit (enqueue, a failed attempt, a
delivered one) leaves that event owed; the repair (:func:`services.ledger_outbox.append_owed`, or
the notice's next delivery, which sends nothing twice) appends it once, a second repair appends
nothing, and the ledger then holds exactly one event per phase and attempt and verifies offline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from governance.lineage import CheckpointSigner, Ledger, verify
from governance.vault import Vault
from schemas.errors import TransientError
from schemas.lineage import EventKind, LineageEvent
from schemas.settings import NoticeSettings
from services import notices
from services.ledger_outbox import append_owed, owed
from tests.notice_support import SmtpServer, acme_vault

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ADDRESS = "dpo@controller.example"


class InjectedCrash(RuntimeError):
    """Stands for the process dying (or the database going away) after the notice committed."""


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return acme_vault(db_engine, tmp_path, T0)


def _fail_on(monkeypatch: pytest.MonkeyPatch, phase: str) -> None:
    """Make every append of a ``notice`` event of ``phase`` fail (other events are left alone)."""
    real = Ledger.append

    def append(self: Ledger, events: Sequence[LineageEvent], **kw: Any) -> list[int]:
        if any(e.kind is EventKind.NOTICE and e.details["phase"] == phase for e in events):
            raise InjectedCrash(f"ledger unreachable appending {phase}")
        return real(self, events, **kw)

    monkeypatch.setattr(Ledger, "append", append)


def _phases(engine: Engine, notice_id: str) -> Counter[tuple[str, object]]:
    return Counter(
        (str(e.details["phase"]), e.details.get("attempt"))
        for e in Ledger(engine, "acme").read_events()
        if e.kind is EventKind.NOTICE and e.details["notice_id"] == notice_id
    )


def test_each_notice_event_lost_after_its_commit_is_appended_once(
    db_engine: Engine, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = SmtpServer()  # not started yet: the relay is down
    config = NoticeSettings(smtp_port=smtp.port, timeout_s=5)
    contact, _ = notices.add_contact(db_engine, vault, "acme", label="dpo", email=ADDRESS, now=T0)

    # 1. enqueue: the notice and its delivery commit, the enqueued event does not reach the ledger.
    _fail_on(monkeypatch, "enqueued")
    with pytest.raises(InjectedCrash):
        notices.enqueue_notice(db_engine, tenant="acme", kind="run_failed", facts={"sync": "s1"}, now=T0)
    monkeypatch.undo()
    (first,) = notices.pending_notices(db_engine)  # the notice committed: it will be delivered
    assert [(r.kind, r.ref, r.step) for r in owed(db_engine)] == [("notice", first, "enqueued")]
    assert append_owed(db_engine, kind=EventKind.NOTICE).appended == ((first, "acme", "enqueued"),)
    assert append_owed(db_engine).appended == ()  # a second repair appends nothing

    # 2. a failed attempt commits, its delivery_failed event is lost; the next attempt appends it.
    _fail_on(monkeypatch, "delivery_failed")
    with pytest.raises(InjectedCrash):
        notices.deliver(db_engine, vault, config, first, contact.id, now=T0)
    monkeypatch.undo()
    assert [r.step for r in owed(db_engine)] == [f"delivery_failed:{contact.id}:1"]
    smtp.start()
    try:
        assert notices.deliver(db_engine, vault, config, first, contact.id, now=T0) == 2

        # 3. a delivered attempt commits (the mail went out), its event is lost: the activity's
        # retry sends nothing again and appends the event.
        second = notices.enqueue_notice(
            db_engine, tenant="acme", kind="run_refused", facts={}, subject="s2", now=T0
        ).notice_id
        _fail_on(monkeypatch, "delivered")
        with pytest.raises(InjectedCrash):
            notices.deliver(db_engine, vault, config, second, contact.id, now=T0)
        monkeypatch.undo()
        assert [r.step for r in owed(db_engine)] == [f"delivered:{contact.id}:1"]
        assert notices.deliver(db_engine, vault, config, second, contact.id, now=T0) == 0
    finally:
        smtp.stop()
    assert len(smtp.handler.messages) == 2  # one mail per notice
    assert owed(db_engine) == [] and append_owed(db_engine).appended == ()

    assert _phases(db_engine, first) == {
        ("enqueued", None): 1,
        ("delivery_failed", 1): 1,
        ("delivered", 2): 1,
    }
    assert _phases(db_engine, second) == {("enqueued", None): 1, ("delivered", 1): 1}
    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    ledger = Ledger(db_engine, "acme")
    checkpoint = ledger.checkpoint(signer)
    result = verify(ledger.export_report(checkpoint).model_dump_json(), checkpoint, signer.public_key)
    assert result.ok, result.reason
    (enqueued,) = [
        e for e in ledger.read_events()
        if e.kind is EventKind.NOTICE and e.details["notice_id"] == first and e.details["phase"] == "enqueued"
    ]  # fmt: skip
    assert enqueued.timestamp == T0 and enqueued.details["fact_sync"] == "s1"  # built at enqueue time


def test_a_notice_never_says_a_failure_it_did_not_record(db_engine: Engine, vault: Vault) -> None:
    """Without a crash, a failed attempt is still a retryable error with its event appended at once."""
    smtp = SmtpServer()  # never started
    contact, _ = notices.add_contact(db_engine, vault, "acme", label="dpo", email=ADDRESS, now=T0)
    sent = notices.enqueue_notice(db_engine, tenant="acme", kind="run_failed", facts={}, now=T0)
    with pytest.raises(TransientError):
        notices.deliver(
            db_engine, vault, NoticeSettings(smtp_port=smtp.port, timeout_s=5), sent.notice_id, contact.id,
            now=T0,
        )  # fmt: skip
    assert owed(db_engine) == []
    assert _phases(db_engine, sent.notice_id) == {("enqueued", None): 1, ("delivery_failed", 1): 1}
