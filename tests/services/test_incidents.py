"""Breach incidents on the database of ``db_url`` (SQLite and PostgreSQL): scope computed from the
ledgers of three tenants (filters by window, connection, sync and subprocessor), the became-aware and
notified ledger events, idempotent notify, the 72 h / 24 h clock, the controller's report naming no
other tenant, the auditor's view citing ledger indexes, and a tampered ledger opening an incident."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from api.audit.incidents import incident_history
from api.audit.reports import tenant_events
from governance.lineage import CheckpointSigner, Ledger
from governance.registry import Registry
from governance.vault import Vault
from schemas.errors import ConfigError
from schemas.lineage import EventKind
from services import notices
from services.incident_scope import Scope
from services.incident_signals import credential_window, ledger_failures, open_ledger_incidents
from services.incidents import (
    Signal,
    clock,
    get_incident,
    incident_report,
    notify,
    open_incident,
    update_incident,
)
from store import lineage as lineage_store
from store import notices as notice_store
from store import tenants as tenant_store
from tests.incident_support import ACME, GLOBEX, HOUR, INITECH, hashes, pull_event, seeded_vault

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def vault(db_engine: Engine, tmp_path: Path) -> Vault:
    return seeded_vault(db_engine, tmp_path, T0)


def _incident_steps(engine: Engine, tenant: str) -> list[str]:
    return [
        str(e.details["step"]) for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.INCIDENT
    ]


def _open(engine: Engine, registry: Registry, **filters: Any) -> str:
    scope = Scope(T0, T0 + 24 * HOUR, **filters)
    opened = open_incident(
        engine, registry, scope, nature="unauthorized_access", summary="staging bucket readable",
        became_aware=T0 + 5 * HOUR, now=T0 + 6 * HOUR,
    )  # fmt: skip
    return opened.row.id


def test_scope_is_computed_from_lineage_and_became_aware_is_ledgered(
    db_engine: Engine, registry: Registry, vault: Vault
) -> None:
    incident = get_incident(db_engine, _open(db_engine, registry))
    got = {t.tenant: (t.subjects, t.subjects_basis, t.records, t.syncs) for t in incident.tenants}
    assert got == {
        ACME: (5, "keyed_hashes", 5, ("contacts",)),
        GLOBEX: (4, "keyed_hashes", 5, ("contacts",)),
    }
    (acme,) = [t for t in incident.tenants if t.tenant == ACME]
    assert acme.categories == ("business_contact", "contact_details")
    assert "Contact.Email" in acme.fields and all(f.startswith("Contact.") for f in acme.fields)
    assert _incident_steps(db_engine, ACME) == ["became_aware"]
    assert _incident_steps(db_engine, INITECH) == []
    (event,) = [e for e in Ledger(db_engine, GLOBEX).read_events() if e.kind is EventKind.INCIDENT]
    assert event.details["became_aware"] == "2026-12-07T14:00:00.000000Z"
    assert event.counts == {"subjects": 4, "records": 5, "events": 2}
    assert event.timestamp == T0 + 6 * HOUR  # recorded at opening; the awareness time is in details


def test_filters_narrow_the_scope(db_engine: Engine, registry: Registry, vault: Vault) -> None:
    def tenants(incident_id: str) -> list[str]:
        return [t.tenant for t in get_incident(db_engine, incident_id).tenants]

    assert tenants(_open(db_engine, registry, connections=("sa-globex",))) == [GLOBEX]
    assert tenants(_open(db_engine, registry, subprocessor="hubspot")) == [ACME]  # only acme wrote there
    assert tenants(_open(db_engine, registry, subprocessor="database")) == [ACME, GLOBEX]  # infrastructure
    assert tenants(_open(db_engine, registry, tenants=(ACME,), syncs=("contacts",))) == [ACME]
    assert tenants(_open(db_engine, registry, syncs=("other",))) == []
    assert credential_window(db_engine, ["sa-acme", "hu-globex"]) == T0 - 5 * HOUR


def test_bad_input_names_the_field_and_the_fix(db_engine: Engine, registry: Registry, vault: Vault) -> None:
    with pytest.raises(ConfigError, match=r"--to .* must be after --from"):
        Scope(T0, T0 - HOUR)
    with pytest.raises(ConfigError, match=r"--tenant 'nobody': no such tenant \(tenants: acme, globex"):
        _open(db_engine, registry, tenants=("nobody",))
    with pytest.raises(ConfigError, match="--connection 'c-x': no such connection; see: crmhub connections"):
        _open(db_engine, registry, connections=("c-x",))
    with pytest.raises(ConfigError, match="--subprocessor 'acme-cloud' is not in the registry"):
        _open(db_engine, registry, subprocessor="acme-cloud")
    with pytest.raises(ConfigError, match=r"--aware .* lies in the future"):
        open_incident(db_engine, registry, Scope(T0, T0 + HOUR), nature="loss", summary="x",
                      became_aware=T0 + 2 * HOUR, now=T0 + HOUR)  # fmt: skip
    with pytest.raises(ConfigError, match="--consequences holds an e-mail address") as info:
        open_incident(db_engine, registry, Scope(T0, T0 + HOUR), nature="loss", summary="x",
                      consequences="mail to jane@example.org leaked", now=T0 + HOUR)  # fmt: skip
    assert "jane" not in str(info.value)
    with pytest.raises(ConfigError, match="--nature is one of unauthorized_access"):
        open_incident(db_engine, registry, Scope(T0, T0 + HOUR), nature="oops", summary="x", now=T0 + HOUR)
    with pytest.raises(ConfigError, match="crmhub incident list"):
        notify(db_engine, "inc-none")
    with pytest.raises(ConfigError, match="concerns no tenant"):
        notify(db_engine, _open(db_engine, registry, syncs=("other",)))


def test_notify_once_per_tenant_then_idempotent(db_engine: Engine, registry: Registry, vault: Vault) -> None:
    notices.add_contact(db_engine, vault, ACME, label="dpo", email="dpo@acme.example")
    incident_id = _open(db_engine, registry)
    first = notify(db_engine, incident_id, now=T0 + 7 * HOUR)
    assert [(o.tenant, o.contacts, o.already, o.notice_id is not None) for o in first] == [
        (ACME, 1, False, True),
        (GLOBEX, 0, False, False),  # no contact: not marked notified
    ]
    notices.add_contact(db_engine, vault, GLOBEX, label="ops", webhook_url="https://hooks.globex.example/n")
    second = notify(db_engine, incident_id, now=T0 + 8 * HOUR)
    assert [(o.tenant, o.already) for o in second] == [(ACME, True), (GLOBEX, False)]
    assert second[0].notice_id == first[0].notice_id and second[0].notified == T0 + 7 * HOUR
    third = notify(db_engine, incident_id, now=T0 + 9 * HOUR)
    assert all(o.already for o in third)
    for tenant, hours in ((ACME, 2), (GLOBEX, 3)):
        assert _incident_steps(db_engine, tenant) == ["became_aware", "notified"]
        (notified,) = [
            e for e in Ledger(db_engine, tenant).read_events()
            if e.kind is EventKind.INCIDENT and e.details["step"] == "notified"
        ]  # fmt: skip
        assert notified.details["minutes_to_notify"] == hours * 60 and notified.details["late"] is False
        with db_engine.connect() as conn:
            notice = notice_store.get_notice(conn, str(notified.details["notice_id"]))
        assert notice is not None and notice.kind == "breach" and notice.throttle_key == incident_id
        assert notice.facts["data_categories"] == "business_contact,contact_details"
        assert "dpo@" not in str(notice.facts) and "staging bucket" not in str(notice.facts)
    with db_engine.connect() as conn:
        breach_notices = conn.execute(
            select(notice_store.notices.c.tenant).where(notice_store.notices.c.kind == "breach")
        ).scalars()
        assert sorted(breach_notices) == [ACME, GLOBEX]  # one each, however often notify ran


def test_the_clock_flags_late_and_overdue() -> None:
    assert clock(T0, T0 + 73 * HOUR, T0 + 80 * HOUR).late
    assert not clock(T0, T0 + 71 * HOUR, T0 + 80 * HOUR).late
    assert clock(T0, None, T0 + 25 * HOUR).overdue and "OVERDUE" in clock(T0, None, T0 + 25 * HOUR).flag
    assert not clock(T0, None, T0 + 23 * HOUR).overdue


def test_controller_report_and_auditor_view_are_the_tenants_own(
    db_engine: Engine, registry: Registry, vault: Vault
) -> None:
    notices.add_contact(db_engine, vault, ACME, label="dpo", email="dpo@acme.example")
    incident_id = _open(db_engine, registry, connections=("sa-acme", "sa-globex"))
    update_incident(db_engine, incident_id, consequences="contact details readable by one third party",
                    measures="bucket closed, keys rotated", now=T0 + 6 * HOUR)  # fmt: skip
    notify(db_engine, incident_id, now=T0 + 7 * HOUR)
    doc = incident_report(get_incident(db_engine, incident_id), tenant=ACME, now=T0 + 8 * HOUR)
    assert doc["totals"] == {"tenants": 1, "subjects": 5, "records": 5}
    assert doc["likely_consequences"].startswith("contact details") and doc["measures"].startswith("bucket")
    assert doc["tenants"][0]["controller_deadline"] == "2026-12-10T16:00:00.000000Z"
    assert GLOBEX not in str(doc) and "sa-globex" not in str(doc)
    with pytest.raises(ConfigError, match="does not concern tenant 'initech'"):
        incident_report(get_incident(db_engine, incident_id), tenant=INITECH)
    view = incident_history(db_engine, ACME, tenant_events(db_engine, ACME), now=T0 + 8 * HOUR)
    (seen,) = view["incidents"]
    assert [x["step"] for x in seen["ledger"]] == ["became_aware", "updated", "notified"]
    events = Ledger(db_engine, ACME).read_events()
    for cited in seen["ledger"] + seen["notice_ledger"]:
        assert events[cited["index"]].details.get("incident_id", seen["notice_id"]) in (
            incident_id,
            seen["notice_id"],
        )
    assert [x["phase"] for x in seen["notice_ledger"]] == ["enqueued"]
    assert GLOBEX not in str(view)
    assert incident_history(db_engine, INITECH, tenant_events(db_engine, INITECH), now=T0)["incidents"] == []


def test_a_tampered_ledger_opens_one_incident(
    db_engine: Engine, registry: Registry, vault: Vault, tmp_path: Path
) -> None:
    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    for tenant in (ACME, GLOBEX):
        Ledger(db_engine, tenant).checkpoint(signer)
    assert ledger_failures(db_engine, signer) == []
    forged = pull_event(GLOBEX, T0 + 2 * HOUR, hashes(GLOBEX, 1)).canonical_bytes()
    with db_engine.begin() as conn:
        conn.execute(
            update(lineage_store.events)
            .where(lineage_store.events.c.tenant == GLOBEX, lineage_store.events.c.idx == 0)
            .values(event=forged)
        )
    (failure,) = ledger_failures(db_engine, signer)
    assert failure.tenant == GLOBEX
    ((_, incident, new),) = open_ledger_incidents(db_engine, registry, [failure], now=T0 + 6 * HOUR)
    assert new and incident.row.signal == Signal.LEDGER_VERIFICATION_FAILED.value
    assert [t.tenant for t in incident.tenants] == [GLOBEX] and incident.row.nature == "alteration"
    ((_, again, new_again),) = open_ledger_incidents(db_engine, registry, [failure], now=T0 + 7 * HOUR)
    assert not new_again and again.row.id == incident.row.id


def test_a_tampered_ledger_without_data_events_still_names_its_tenant(
    db_engine: Engine, registry: Registry, vault: Vault, tmp_path: Path
) -> None:
    with db_engine.begin() as conn:
        tenant_store.create_tenant(
            conn, id="hooli", name="hooli", home_region="eea", authorised_subprocessors=[], now=T0
        )
    notices.enqueue_notice(db_engine, tenant="hooli", kind="run_failed", facts={"sync_id": "s1"}, now=T0)
    signer = CheckpointSigner.load_or_create(tmp_path / "signing.key")
    Ledger(db_engine, "hooli").checkpoint(signer)
    (notice,) = Ledger(db_engine, "hooli").read_events()
    forged = notice.model_copy(update={"details": {**notice.details, "contacts": 3}})
    with db_engine.begin() as conn:
        conn.execute(
            update(lineage_store.events)
            .where(lineage_store.events.c.tenant == "hooli")
            .values(event=forged.canonical_bytes())
        )
    (failure,) = ledger_failures(db_engine, signer)
    ((_, incident, _),) = open_ledger_incidents(db_engine, registry, [failure], now=T0 + HOUR)
    (part,) = incident.tenants
    assert (part.tenant, part.subjects, part.subjects_basis) == ("hooli", 0, "record_counts")
    ((_, again, new),) = open_ledger_incidents(db_engine, registry, [failure], now=T0 + 2 * HOUR)
    assert not new and again.row.id == incident.row.id
