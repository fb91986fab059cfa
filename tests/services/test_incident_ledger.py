"""Crash-safe incident ledger events on the database of ``db_url`` (SQLite and PostgreSQL): a failure
injected after the incident's commit, on tenant 2 of 3, leaves tenants 2 and 3 owed; the repair
appends exactly what is missing, a second repair appends nothing, and each tenant's ledger then has
one event per step and verifies offline against a signed checkpoint; four repairs at once append
each owed event once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from governance.lineage import CheckpointSigner, Ledger, verify
from governance.registry import Registry
from governance.vault import Vault
from schemas.lineage import EventKind, LineageEvent
from services import notices
from services.incident_scope import Scope
from services.incidents import list_incidents, notify, open_incident, update_incident
from services.ledger_outbox import append_owed, owed
from tests.incident_support import ACME, GLOBEX, HOUR, INITECH, seeded_vault

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TENANTS = (ACME, GLOBEX, INITECH)


class InjectedCrash(RuntimeError):
    """Stands for the process dying (or the database going away) after the incident committed."""


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return seeded_vault(db_engine, tmp_path, T0)


def _fail_for(monkeypatch: pytest.MonkeyPatch, tenant: str) -> list[str]:
    """Make every append of an ``incident`` event to ``tenant``'s ledger fail (the notice events
    :mod:`services.notices` appends are left alone); returns the tenants an incident event was tried for."""
    tried: list[str] = []
    real = Ledger.append

    def append(self: Ledger, events: Sequence[LineageEvent], **kw: Any) -> list[int]:
        if all(e.kind is not EventKind.INCIDENT for e in events):
            return real(self, events, **kw)
        tried.append(self.tenant)
        if self.tenant == tenant:
            raise InjectedCrash(f"ledger of {tenant} unreachable")
        return real(self, events, **kw)

    monkeypatch.setattr(Ledger, "append", append)
    return tried


def _steps(engine: Engine, tenant: str) -> Counter[str]:
    return Counter(
        str(e.details["step"]) for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.INCIDENT
    )


def _open(engine: Engine, registry: Registry) -> str:
    # The window reaches initech's read two days before T0: three tenants are affected.
    scope = Scope(T0 - 72 * HOUR, T0 + 24 * HOUR)
    incident = open_incident(
        engine, registry, scope, nature="unauthorized_access", summary="staging bucket readable",
        became_aware=T0 + 5 * HOUR, now=T0 + 6 * HOUR,
    )  # fmt: skip
    return incident.row.id


def test_a_failure_on_tenant_2_of_3_is_repaired_once(
    db_engine: Engine, registry: Registry, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried = _fail_for(monkeypatch, GLOBEX)
    with pytest.raises(InjectedCrash):
        _open(db_engine, registry)
    assert tried == [ACME, GLOBEX]  # the crash came after the commit, before initech's append
    monkeypatch.undo()
    (incident,) = list_incidents(db_engine)
    assert [t.tenant for t in incident.tenants] == list(TENANTS)  # the rows committed
    assert [_steps(db_engine, t)["became_aware"] for t in TENANTS] == [1, 0, 0]
    assert sorted((r.tenant, r.step) for r in owed(db_engine)) == [
        (GLOBEX, "became_aware"),
        (INITECH, "became_aware"),
    ]

    repaired = append_owed(db_engine, now=T0 + 7 * HOUR)
    assert sorted(repaired.appended) == [
        (incident.row.id, GLOBEX, "became_aware"),
        (incident.row.id, INITECH, "became_aware"),
    ]
    assert repaired.remaining == 0
    assert append_owed(db_engine, now=T0 + 8 * HOUR).appended == ()  # a retry never doubles

    # The same for update and notify: a crash on globex's append, then the repair.
    for tenant in TENANTS:
        notices.add_contact(
            db_engine, vault, tenant=tenant, label="dpo", email=f"dpo@{tenant}.example", now=T0
        )
    _fail_for(monkeypatch, GLOBEX)
    with pytest.raises(InjectedCrash):
        update_incident(db_engine, incident.row.id, measures="bucket closed", now=T0 + 9 * HOUR)
    monkeypatch.undo()
    assert sorted((r.tenant, r.step.split("@")[0]) for r in owed(db_engine)) == [
        (GLOBEX, "updated"),
        (INITECH, "updated"),
    ]
    assert len(append_owed(db_engine, now=T0 + 9 * HOUR).appended) == 2

    _fail_for(monkeypatch, GLOBEX)
    with pytest.raises(InjectedCrash):
        notify(db_engine, incident.row.id, now=T0 + 10 * HOUR)
    monkeypatch.undo()
    assert [(r.tenant, r.step) for r in owed(db_engine)] == [(GLOBEX, "notified")]
    assert len(append_owed(db_engine, now=T0 + 11 * HOUR).appended) == 1
    assert append_owed(db_engine, now=T0 + 11 * HOUR).appended == ()
    # notify stopped after globex: running it again notifies initech once and skips the others.
    outcomes = {o.tenant: o.already for o in notify(db_engine, incident.row.id, now=T0 + 12 * HOUR)}
    assert outcomes == {ACME: True, GLOBEX: True, INITECH: False}
    assert owed(db_engine) == []

    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    for tenant in TENANTS:
        assert _steps(db_engine, tenant) == {"became_aware": 1, "updated": 1, "notified": 1}, tenant
        ledger = Ledger(db_engine, tenant)
        checkpoint = ledger.checkpoint(signer)
        result = verify(ledger.export_report(checkpoint).model_dump_json(), checkpoint, signer.public_key)
        assert result.ok, (tenant, result.reason)
    (notified,) = [
        e for e in Ledger(db_engine, GLOBEX).read_events()
        if e.kind is EventKind.INCIDENT and e.details["step"] == "notified"
    ]  # fmt: skip
    assert notified.timestamp == T0 + 10 * HOUR  # the event built at notify time, appended by the repair


def test_repairs_at_once_append_each_owed_event_once(
    db_engine: Engine, registry: Registry, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_for(monkeypatch, ACME)  # the first tenant: all three events stay owed
    with pytest.raises(InjectedCrash):
        _open(db_engine, registry)
    monkeypatch.undo()
    assert len(owed(db_engine)) == 3
    start = threading.Barrier(4)

    def repair() -> int:
        start.wait()
        return len(append_owed(db_engine).appended)

    with ThreadPoolExecutor(max_workers=4) as pool:
        appended = list(pool.map(lambda _: repair(), range(4)))
    assert sum(appended) == 3 and owed(db_engine) == []
    assert [_steps(db_engine, t)["became_aware"] for t in TENANTS] == [1, 1, 1]
