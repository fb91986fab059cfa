"""The staging store: sealed parts put, read, deleted and purged; record content only in sealed columns.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine

from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import staging as staging_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def part(batch: str, n: int, *, expires: datetime, tenant: str = "acme") -> staging_store.StagedPart:
    return staging_store.StagedPart(
        batch_id=batch,
        part=n,
        tenant=tenant,
        sync_id="contacts",
        run_id="r1",
        seq=0,
        sealed=b"\x01sealed" + bytes([n]),
        records=10,
        deleted=1,
        deleted_keys=b"\x01keys",
        created=NOW,
        expires_at=expires,
    )


def test_staging_put_get_delete_purge(db_engine: Engine) -> None:
    later = NOW + timedelta(days=30)
    with db_engine.begin() as conn:
        for n in range(3):
            staging_store.put_staged(conn, part("b1", n, expires=later))
        staging_store.put_staged(conn, part("b1", 1, expires=later))  # a retried part replaces its leftover
        staging_store.put_staged(conn, part("b2", 0, expires=NOW))
    with db_engine.begin() as conn:
        parts = staging_store.get_staged(conn, "acme", "b1")
        assert [p.part for p in parts] == [0, 1, 2]
        assert parts[1].sealed == b"\x01sealed\x01" and parts[1].deleted_keys == b"\x01keys"
        assert parts[0].expires_at == later
        assert staging_store.get_staged(conn, "other-tenant", "b1") == []
        assert [p.part for p in staging_store.get_staged(conn, "acme", "b1", part=2)] == [2]
        assert staging_store.delete_staged(conn, "acme", "b1", keep=[0]) == 2
        assert staging_store.staged_parts(conn, "acme", "b1") == [0]
        assert staging_store.purge_expired_staging(conn, now=NOW) == 1
        assert staging_store.staged_parts(conn, "acme", "b2") == []
        assert staging_store.delete_staged(conn, "acme", "b1") == 1
        assert staging_store.staged_parts(conn, "acme", "b1") == []


def test_no_plaintext_columns_for_records(db_engine: Engine) -> None:
    """Record content only ever lives in LargeBinary (sealed) columns of staging and dead letters."""
    binary = {
        c.name
        for t in (staging_store.staging_batches, dead_letter_store.dead_letters)
        for c in t.columns
        if c.type.python_type is bytes
    }
    assert binary == {"sealed", "deleted_keys", "sealed_record"}
    with db_engine.connect() as conn:  # the migration created what the module describes
        for table in (staging_store.staging_batches, dead_letter_store.dead_letters, id_map_store.id_map):
            assert conn.execute(select(table).limit(1)).all() == []
