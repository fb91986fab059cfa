"""Migration ``0028_ledger_outbox`` on the database of ``db_url`` (SQLite and PostgreSQL): the rows
of ``incident_ledger_outbox`` (0023) move to ``ledger_outbox`` as ``incident`` rows, the owed one
still owed (and appended once by the repair), the appended one still appended; a downgrade gives
the incident rows back under their old keys and drops the notice rows."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from governance.lineage import Ledger
from schemas.lineage import EventKind
from services.incidents import incident_event
from services.ledger_outbox import append_owed, owe, owed
from store.engine import make_engine
from store.migrate import alembic_config, upgrade

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
INC = "inc-20261207-0000abcd"


def test_0028_carries_the_incident_outbox_over_and_back(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "0023_incident_outbox")
    engine = make_engine(db_url)
    try:
        aware = incident_event("acme", INC, "became_aware", at=T0, counts={"subjects": 3})
        notified = incident_event("acme", INC, "notified", at=T0, notice_id="ntc_1")
        insert = text(
            "INSERT INTO incident_ledger_outbox (key, incident_id, tenant, step, event, created, appended) "
            "VALUES (:key, :inc, 'acme', :step, :event, :created, :appended)"
        )
        rows = [
            {"key": f"{INC}|became_aware|acme", "inc": INC, "step": "became_aware",
             "event": aware.canonical_bytes(), "created": T0, "appended": T0},
            {"key": f"{INC}|notified|acme", "inc": INC, "step": "notified",
             "event": notified.canonical_bytes(), "created": T0, "appended": None},
        ]  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert, rows)
        engine.dispose()
        upgrade(db_url)

        (row,) = owed(engine)
        assert (row.key, row.kind, row.ref, row.tenant, row.step) == (
            f"incident|{INC}|notified|acme", "incident", INC, "acme", "notified",
        )  # fmt: skip
        assert append_owed(engine, kind=EventKind.INCIDENT).appended == ((INC, "acme", "notified"),)
        assert append_owed(engine).appended == ()
        assert [e.details["step"] for e in Ledger(engine, "acme").read_events()] == ["notified"]
        with engine.begin() as conn:  # a notice event owed, then the downgrade
            event = notified.model_copy(update={"kind": EventKind.NOTICE, "run_id": "notice:ntc_1"})
            owe(conn, "ntc_1", "enqueued", [event], now=T0)
        assert [(r.kind, r.ref) for r in owed(engine)] == [("notice", "ntc_1")]
        engine.dispose()

        command.downgrade(alembic_config(db_url), "0023_incident_outbox")
        with engine.connect() as conn:
            kept = conn.execute(
                text("SELECT key, incident_id, appended IS NULL FROM incident_ledger_outbox ORDER BY key")
            ).all()
        assert [tuple(r) for r in kept] == [
            (f"{INC}|became_aware|acme", INC, False),
            (f"{INC}|notified|acme", INC, False),
        ]
        engine.dispose()
        upgrade(db_url)
        assert owed(engine) == []
    finally:
        engine.dispose()
