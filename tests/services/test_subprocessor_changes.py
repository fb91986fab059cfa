"""Subprocessor changes on the database of ``db_url`` (SQLite and PostgreSQL): who is notified, the
window, objections, the tenant's effective version, and the Art. 30(2) record's contacts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from api.audit.reports import records_of_processing
from governance.lineage import Ledger
from governance.registry import Registry, load_registry
from governance.registry_versions import effective_registry
from schemas.errors import ConfigError
from schemas.lineage import EventKind
from services.subprocessor_changes import close, object_to, propose
from services.wiring import default_subprocessors_file
from store import tenants as tenant_store
from store.subprocessor_versions import ObjectionChoice

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def configured() -> Registry:
    return load_registry(default_subprocessors_file())


@pytest.fixture
def tenants(db_engine: Engine) -> list[str]:
    with db_engine.begin() as conn:
        for tid, subs in (("acme", ["salesforce", "hubspot"]), ("globex", ["salesforce"])):
            tenant_store.create_tenant(
                conn, id=tid, name=tid, home_region="eea", authorised_subprocessors=subs, now=T0
            )
    return ["acme", "globex"]


def _with(configured: Registry, sub_id: str, **changes: object) -> Registry:
    data = configured.model_dump(by_alias=True)
    for s in data["subprocessors"]:
        if s["id"] == sub_id:
            s.update(changes)
    return Registry.model_validate(data)


def _steps(engine: Engine, tenant: str) -> list[tuple[object, object]]:
    events = Ledger(engine, tenant).read_events()
    return [(e.details["step"], e.details["version"]) for e in events if e.kind is EventKind.REGISTRY]


def test_a_vendor_change_notifies_only_the_tenants_that_authorised_it(
    db_engine: Engine, configured: Registry, tenants: list[str]
) -> None:
    new = _with(configured, "hubspot", country="IE")
    proposal = propose(db_engine, configured, new, summary="HubSpot EU entity", window=DAY, now=T0)
    assert proposal.version.version == 2 and proposal.change.changed == ("hubspot",)
    assert proposal.notified == ("acme",)
    assert _steps(db_engine, "acme") == [("notice", 2)]
    assert _steps(db_engine, "globex") == []
    notice_kinds = [e.kind for e in Ledger(db_engine, "acme").read_events()]
    assert notice_kinds == [EventKind.NOTICE, EventKind.REGISTRY]  # the controller notice, then the step


def test_propose_refuses_no_change_an_open_proposal_and_a_bad_window(
    db_engine: Engine, configured: Registry, tenants: list[str]
) -> None:
    with pytest.raises(ConfigError, match="the same as version 1"):
        propose(db_engine, configured, configured, summary="nothing", window=DAY, now=T0)
    with pytest.raises(ConfigError, match="--window"):
        propose(db_engine, configured, _with(configured, "temporal", country="US"), summary="x",
                window=timedelta(days=400), now=T0)  # fmt: skip
    propose(
        db_engine, configured, _with(configured, "temporal", country="US"), summary="x", window=DAY, now=T0
    )
    with pytest.raises(ConfigError, match="version 2 is still proposed"):
        propose(db_engine, configured, _with(configured, "database", country="FI"), summary="y", window=DAY,
                now=T0)  # fmt: skip


def test_objections_hold_back_later_versions_until_applied(
    db_engine: Engine, configured: Registry, tenants: list[str]
) -> None:
    v2 = _with(configured, "temporal", country="US")
    propose(db_engine, configured, v2, summary="Temporal Cloud", window=DAY, now=T0)
    object_to(db_engine, "globex", 2, ObjectionChoice.KEEP, by="cli", now=T0 + DAY / 2)
    with pytest.raises(ConfigError, match="already objected"):
        object_to(db_engine, "globex", 2, ObjectionChoice.STOP, by="cli", now=T0 + DAY / 2)
    with db_engine.connect() as conn:  # an objection to an open version holds nothing back yet
        assert effective_registry(conn, configured, "globex").version == 1
        assert effective_registry(conn, configured, "globex").held_by is None
    closing = close(db_engine, configured, 2, now=T0 + DAY)
    assert closing.applied_to == ("acme",) and [o.tenant for o in closing.not_applied] == ["globex"]
    with pytest.raises(ConfigError, match="no longer accepted"):
        object_to(db_engine, "acme", 2, ObjectionChoice.STOP, by="cli", now=T0 + DAY)

    v3 = _with(v2, "database", country="FI")
    propose(db_engine, configured, v3, summary="database in Finland", window=DAY, now=T0 + 2 * DAY)
    close(db_engine, configured, 3, now=T0 + 3 * DAY)
    with db_engine.connect() as conn:
        acme, globex = (effective_registry(conn, configured, t) for t in ("acme", "globex"))
    assert acme.version == 3 and acme.registry.subprocessor("database").country == "FI"
    # v3 carries the v2 change globex objected to: it stays on v1, running (keep)
    assert globex.version == 1 and globex.registry.subprocessor("temporal").country == "DE"
    assert globex.held_by is not None and globex.held_by.version == 2 and not globex.stopped
    assert _steps(db_engine, "globex") == [("notice", 2), ("objection", 2), ("not_applied", 2),
                                           ("notice", 3), ("not_applied", 3)]  # fmt: skip


def test_closing_before_the_window_ends_is_refused(
    db_engine: Engine, configured: Registry, tenants: list[str]
) -> None:
    propose(
        db_engine, configured, _with(configured, "temporal", country="US"), summary="x", window=DAY, now=T0
    )
    with pytest.raises(ConfigError, match=r"is open until 2026-12-02T09:00:00\.000000Z"):
        close(db_engine, configured, 2, now=T0 + DAY - timedelta(seconds=1))


def test_records_of_processing_name_contacts_representative_dpo_and_infrastructure(
    db_engine: Engine, configured: Registry, tenants: list[str]
) -> None:
    record = records_of_processing(db_engine, configured, "globex", now=T0)
    assert record["processor"]["contact"]["email"] == "privacy@crmhub.example"
    assert record["processor"]["dpo"] == {"name": "crmhub Data Protection Officer",
                                          "email": "dpo@crmhub.example", "address": None}  # fmt: skip
    assert record["controller"]["representative"]["name"] == "Globex EU Representative B.V."
    assert record["not_recorded"] == ["processor representative", "controller dpo"]
    roles = {s["id"]: s["role"] for s in record["subprocessors"]}
    assert roles == {"hosting": "infrastructure", "database": "infrastructure",
                     "temporal": "infrastructure", "salesforce": "subprocessor"}  # fmt: skip
