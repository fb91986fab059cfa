"""The id map: upserts, lookups and deletes across more than one IN chunk.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from store import id_map as id_map_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_id_map_upsert_lookup_delete(db_engine: Engine) -> None:
    hashes = [f"kh_{i:032x}" for i in range(1200)]  # more than one IN chunk
    with db_engine.begin() as conn:
        id_map_store.upsert_id_map(
            conn, "acme", "contacts", [(h, f"d{i}") for i, h in enumerate(hashes)], now=NOW
        )
        id_map_store.upsert_id_map(conn, "acme", "contacts", [(hashes[0], "d-new")], now=NOW)
        id_map_store.upsert_id_map(conn, "acme", "other", [(hashes[0], "x")], now=NOW)
        id_map_store.upsert_id_map(conn, "acme", "contacts", [], now=NOW)
    with db_engine.begin() as conn:
        found = id_map_store.lookup_id_map(conn, "acme", "contacts", [*hashes, "kh_missing"])
        assert len(found) == 1200
        assert found[hashes[0]] == "d-new" and found[hashes[1199]] == "d1199"
        assert id_map_store.delete_id_map(conn, "acme", "contacts", hashes[:700]) == 700
        assert len(id_map_store.lookup_id_map(conn, "acme", "contacts", hashes)) == 500
        assert id_map_store.lookup_id_map(conn, "acme", "other", hashes[:1]) == {hashes[0]: "x"}
