"""Delete reconciliation state and the id map's reverse lookup: the sync's request (kept at its
earliest, cleared only by a listing begun after it), the listing, what vanished (only entries mapped
before the listing began), and destination records still mapped from another source key.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from store import id_map as id_map_store
from store import reconcile as reconcile_store
from store import syncs as sync_store
from tests.store.test_syncs import spec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _h(i: int) -> str:
    return f"kh_{i:032x}"


def test_a_request_keeps_its_earliest_reason_and_clears_only_after_a_later_listing(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        sync_store.create_sync(conn, spec(), now=T0)
        assert reconcile_store.reconcile_need(conn, "acme", "contacts") is None
        reconcile_store.request_reconcile(conn, "acme", "contacts", "DELETE_LOG_PURGED", now=T0)
        reconcile_store.request_reconcile(
            conn, "acme", "contacts", "DELETE_LOG_EXPIRED", now=T0 + timedelta(1)
        )
        need = reconcile_store.reconcile_need(conn, "acme", "contacts")
        assert need is not None and (need.reason, need.requested) == ("DELETE_LOG_PURGED", T0)
        # a listing that began before the request cannot close its gap
        assert not reconcile_store.clear_reconcile(
            conn, "acme", "contacts", requested_before=T0 - timedelta(1)
        )
        assert reconcile_store.reconcile_need(conn, "acme", "contacts") is not None
        assert reconcile_store.clear_reconcile(conn, "acme", "contacts", requested_before=T0)
        assert reconcile_store.reconcile_need(conn, "acme", "contacts") is None
        assert sync_store.get_sync(conn, "acme", "contacts") is not None  # the row reads back


def test_vanished_is_what_was_mapped_before_the_listing_and_is_not_listed(db_engine: Engine) -> None:
    started = T0 + timedelta(hours=1)
    with db_engine.begin() as conn:
        old = [(_h(i), f"d{i}") for i in range(1200)]  # more than one IN chunk
        id_map_store.upsert_id_map(conn, "acme", "contacts", old, now=T0)
        id_map_store.upsert_id_map(conn, "acme", "contacts", [(_h(5000), "new")], now=started)  # during it
        id_map_store.upsert_id_map(conn, "acme", "other", [(_h(7), "x")], now=T0)  # another sync
        listed = [_h(i) for i in range(1200) if i % 10]  # every tenth record vanished
        reconcile_store.add_listed(conn, "acme", "contacts", "r1", listed[:600])
        reconcile_store.add_listed(conn, "acme", "contacts", "r1", listed[500:])  # a retried page repeats
        reconcile_store.add_listed(conn, "acme", "contacts", "r0", [_h(0)])  # an older run's listing
        assert reconcile_store.count_listed(conn, "acme", "contacts", "r1") == len(listed)
        assert reconcile_store.mapped_before(conn, "acme", "contacts", started) == 1200
        gone = reconcile_store.vanished(conn, "acme", "contacts", "r1", mapped_before=started)
        assert gone == sorted((_h(i), f"d{i}") for i in range(0, 1200, 10))
        assert reconcile_store.clear_listing(conn, "acme", "contacts", keep_run="r1") == 1
        assert reconcile_store.clear_listing(conn, "acme", "contacts") == len(listed)
        # nothing listed: everything mapped before the listing vanished (the caller's fraction guard)
        assert len(reconcile_store.vanished(conn, "acme", "contacts", "r1", mapped_before=started)) == 1200


def test_shared_destinations_are_those_another_key_still_maps(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        pairs = [(_h(1), "D1"), (_h(2), "D1"), (_h(3), "D3"), (_h(4), "D4"), (_h(5), "D4")]
        id_map_store.upsert_id_map(conn, "acme", "contacts", pairs, now=T0)
        id_map_store.upsert_id_map(conn, "acme", "other", [(_h(9), "D3")], now=T0)  # another sync's
        shared = id_map_store.shared_destinations(
            conn, "acme", "contacts", ["D1", "D3", "D4"], besides=[_h(1), _h(3), _h(4), _h(5)]
        )
        assert shared == {"D1"}  # D1 still mapped from key 2; D4's keys both leave; D3 is only key 3's
