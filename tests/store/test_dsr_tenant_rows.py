"""Offboarding's delete of a tenant's record-bearing rows (store.dsr): the relationship state —
links, sealed snapshots, waiting ids and roles (association_links) and the deferral queue — goes
with staging, dead letters and the id map; another tenant's rows stay.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from store import associations as links_store
from store import dsr as dsr_store
from store import syncs as sync_store
from tests.store.test_syncs import _connection, spec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_offboarding_deletes_the_tenants_relationship_state_and_only_its(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        for tenant in ("acme", "globex"):
            _connection(conn, f"{tenant}-sf", tenant, "salesforce")
            _connection(conn, f"{tenant}-hs", tenant, "hubspot")
            sync_store.create_sync(
                conn,
                spec(
                    tenant=tenant,
                    source_connection_id=f"{tenant}-sf",
                    destination_connection_id=f"{tenant}-hs",
                ),
                now=NOW,
            )
            links_store.set_links(
                conn,
                tenant,
                "contacts",
                "AccountId",
                [("kh_a", "101", "201"), ("kh_b", "102", "202")],
                now=NOW,
            )
            links_store.defer(
                conn,
                tenant,
                [
                    links_store.Deferred(
                        "contacts",
                        "AccountId",
                        "kh_c",
                        "103",
                        "contacts",
                        "companies",
                        "accounts",
                        "kh_p",
                        1,
                        NOW,
                    )
                ],
                now=NOW,
            )
        before = dsr_store.count_tenant_rows(conn, "acme")
        assert (before["association_link_rows"], before["association_deferral_rows"]) == (2, 1)
        deleted = dsr_store.delete_tenant_rows(conn, "acme")
    assert (deleted["association_link_rows"], deleted["association_deferral_rows"]) == (2, 1)
    with db_engine.connect() as conn:
        after = dsr_store.count_tenant_rows(conn, "acme")
        other = dsr_store.count_tenant_rows(conn, "globex")
    assert set(after.values()) == {0}
    assert (other["association_link_rows"], other["association_deferral_rows"]) == (2, 1)
