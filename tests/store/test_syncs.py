"""The sync store: tenants, instructions, syncs, runs, staging, dead letters, id map.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError
from store import connections
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import instructions as instruction_store
from store import runs as run_store
from store import staging as staging_store
from store import syncs as sync_store
from store import tenants as tenant_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(**over: object) -> sync_store.SyncSpec:
    data: dict[str, object] = {
        "tenant": "acme",
        "id": "contacts",
        "name": "SF contacts to HubSpot",
        "source_connection_id": "c-sf",
        "source_stream": "Contact",
        "source_endpoint": "eu",
        "destination_connection_id": "c-hs",
        "destination_stream": "contacts",
        "destination_endpoint": "eu1",
        "mapping": {"Email": "email", "FirstName": "firstname"},
        "destination_id_property": "email",
        "source_key_property": "Email",
        "transforms": ("full_name@1",),
        "instruction_version": 3,
    }
    data.update(over)
    return sync_store.SyncSpec.model_validate(data)


def test_tenant_instruction_sync_round_trip(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        tenant_store.create_tenant(
            conn, id="acme", name="Acme", home_region="eea", authorised_subprocessors=["hubspot"], now=NOW
        )
        instruction_store.add_instruction(
            conn, tenant="acme", version=3, content={"purpose": "crm_sync"}, content_hash="sha256:aa", now=NOW
        )
        sync_store.create_sync(conn, spec(), now=NOW)
    with db_engine.connect() as conn:
        tenant = tenant_store.get_tenant(conn, "acme")
        instruction = instruction_store.get_instruction(conn, "acme", 3)
        sync = sync_store.get_sync(conn, "acme", "contacts")
        assert tenant_store.get_tenant(conn, "nobody") is None
        assert instruction_store.get_instruction(conn, "acme", 4) is None
        assert sync_store.get_sync(conn, "acme", "other") is None
    assert tenant is not None and tenant.home_region == "eea"
    assert tenant.authorised_subprocessors == ("hubspot",)
    assert tenant.created == NOW
    assert instruction is not None and instruction.content == {"purpose": "crm_sync"}
    assert sync is not None and sync.spec == spec()
    assert sync.cursor is None and sync.status == "idle"


def test_duplicates_and_instruction_immutability(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        tenant_store.create_tenant(
            conn, id="acme", name="Acme", home_region="eea", authorised_subprocessors=[], now=NOW
        )
        instruction_store.add_instruction(
            conn, tenant="acme", version=1, content={"a": 1}, content_hash="h1", now=NOW
        )
        # The same content again is a no-op; other content under the same version is refused.
        instruction_store.add_instruction(
            conn, tenant="acme", version=1, content={"a": 1}, content_hash="h1", now=NOW
        )
        with pytest.raises(ConfigError, match="new version"):
            instruction_store.add_instruction(
                conn, tenant="acme", version=1, content={"a": 2}, content_hash="h2", now=NOW
            )
        with pytest.raises(ConfigError, match="already exists"):
            tenant_store.create_tenant(
                conn, id="acme", name="Again", home_region="us", authorised_subprocessors=[], now=NOW
            )
        sync_store.create_sync(conn, spec(), now=NOW)
        with pytest.raises(ConfigError, match="already exists"):
            sync_store.create_sync(conn, spec(), now=NOW)


def test_cursor_and_status(db_engine: Engine) -> None:
    state = StreamState(
        mode=ReadMode.INCREMENTAL, cursor="2026-03-01T11:59:59.000Z", tie_break="003000000001"
    )
    with db_engine.begin() as conn:
        sync_store.create_sync(conn, spec(), now=NOW)
        sync_store.update_cursor(
            conn,
            "acme",
            "contacts",
            state,
            now=NOW + timedelta(minutes=1),
            last_run_id="r1",
            status="completed",
        )
        sync_store.set_sync_status(conn, "acme", "contacts", "running", now=NOW, last_run_id="r2")
    with db_engine.connect() as conn:
        sync = sync_store.get_sync(conn, "acme", "contacts")
    assert sync is not None
    assert sync.cursor == state
    assert (sync.last_run_id, sync.status) == ("r2", "running")


def _connection(conn: Connection, id: str, tenant: str, provider: str) -> None:
    connections.insert_connection(
        conn,
        id=id,
        tenant=tenant,
        provider=provider,
        instance_url=None,
        scopes=(),
        access_token_sealed=b"sealed",
        refresh_token_sealed=b"sealed",
        access_expires_at=None,
        now=NOW,
    )


def test_a_sync_follows_new_connections_of_its_tenant_only(db_engine: Engine) -> None:
    """Re-connected CRMs: the sync points at the new connections; a new source clears the cursor
    (it was a position in another org), a new destination alone keeps it."""
    state = StreamState(mode=ReadMode.INCREMENTAL, cursor="2026-03-01T11:59:59.000Z")
    with db_engine.begin() as conn:
        for cid, tenant, provider in (
            ("c-sf", "acme", "salesforce"),
            ("c-sf2", "acme", "salesforce"),
            ("c-hs2", "acme", "hubspot"),
            ("c-other", "globex", "hubspot"),
        ):
            _connection(conn, cid, tenant, provider)
        sync_store.create_sync(conn, spec(), now=NOW)
        sync_store.update_cursor(conn, "acme", "contacts", state, now=NOW)

        def point(source: str, destination: str, sync: str = "contacts") -> bool:
            return sync_store.set_sync_connections(
                conn, "acme", sync, source=source, destination=destination, now=NOW
            )

        assert point("c-sf", "c-hs2")
        kept = sync_store.get_sync(conn, "acme", "contacts")
        assert kept is not None and kept.cursor == state and kept.spec.destination_connection_id == "c-hs2"
        assert point("c-sf2", "c-hs2")
        moved = sync_store.get_sync(conn, "acme", "contacts")
        assert moved is not None and moved.cursor is None and moved.spec.source_connection_id == "c-sf2"
        assert not point("c-sf2", "c-hs2")
        with pytest.raises(ConfigError, match="not a connection of tenant 'acme'"):
            point("c-sf2", "c-other")
        with pytest.raises(ConfigError, match="has no sync"):
            point("c-sf2", "c-hs2", sync="nope")
        unchanged = sync_store.get_sync(conn, "acme", "contacts")
        assert unchanged is not None and unchanged.spec.destination_connection_id == "c-hs2"


def test_runs_are_idempotent_and_listed_newest_first(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        run_store.start_run(
            conn,
            run_id="r1",
            tenant="acme",
            sync_id="contacts",
            mode="full",
            trigger="manual",
            status="running",
            now=NOW,
        )
        # A retried plan of the same run updates it instead of failing.
        run_store.start_run(
            conn,
            run_id="r1",
            tenant="acme",
            sync_id="contacts",
            mode="full",
            trigger="manual",
            status="refused",
            now=NOW,
            message="mapping reads Phone",
        )
        run_store.start_run(
            conn,
            run_id="r2",
            tenant="acme",
            sync_id="contacts",
            mode="incremental",
            trigger="schedule",
            status="running",
            now=NOW + timedelta(hours=1),
        )
        run_store.finish_run(
            conn,
            "r2",
            status="completed",
            counts={"pulled": 5, "pushed": 4},
            message="ok",
            now=NOW + timedelta(hours=2),
        )
        with pytest.raises(ConfigError, match="another sync"):
            run_store.start_run(
                conn,
                run_id="r1",
                tenant="acme",
                sync_id="other",
                mode="full",
                trigger="manual",
                status="running",
                now=NOW,
            )
    with db_engine.connect() as conn:
        runs = run_store.list_runs(conn, "acme", "contacts")
    assert [r.run_id for r in runs] == ["r2", "r1"]
    assert runs[1].status == "refused" and runs[1].message == "mapping reads Phone"
    assert runs[0].counts == {"pulled": 5, "pushed": 4}
    assert runs[0].finished == NOW + timedelta(hours=2)


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


def letter(i: int, run: str = "r1", key: int | None = None) -> dead_letter_store.DeadLetter:
    return dead_letter_store.DeadLetter(
        id=f"dl{i}",
        tenant="acme",
        sync_id="contacts",
        run_id=run,
        batch_id="b1",
        record_key_hash=f"kh_{i if key is None else key:032x}",
        sealed_record=b"\x01rec",
        error_code="INVALID_EMAIL",
        error_message="property email: INVALID_EMAIL",
        created=NOW + timedelta(seconds=i),
    )


def test_dead_letters_are_idempotent(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        assert dead_letter_store.add_dead_letters(conn, [letter(1), letter(2)]) == 2
        assert dead_letter_store.add_dead_letters(conn, [letter(2), letter(3, run="r2")]) == 1
        assert dead_letter_store.add_dead_letters(conn, []) == 0
    with db_engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, "acme", "contacts") == 3
        assert dead_letter_store.count_dead_letters(conn, "acme", "contacts", run_id="r1") == 2
        listed = dead_letter_store.list_dead_letters(conn, "acme", "contacts")
    assert [d.id for d in listed] == ["dl1", "dl2", "dl3"]
    assert listed[0] == letter(1)


def test_a_record_refused_again_keeps_one_dead_letter(db_engine: Engine) -> None:
    """A rerun that refuses the same records replaces their letters (found by tests/chaos/
    test_partial_failure.py: 7 refused records were 14 dead letters after a second run)."""
    with db_engine.begin() as conn:
        assert dead_letter_store.add_dead_letters(conn, [letter(1), letter(2), letter(3)]) == 3
        other = dataclasses.replace(letter(9, key=1), sync_id="other")  # another sync keeps its own
        assert dead_letter_store.add_dead_letters(conn, [other]) == 1
        assert (
            dead_letter_store.add_dead_letters(conn, [letter(4, run="r2", key=1), letter(5, run="r2", key=2)])
            == 2
        )
    with db_engine.connect() as conn:
        listed = dead_letter_store.list_dead_letters(conn, "acme", "contacts")
        assert [(d.id, d.run_id) for d in listed] == [("dl3", "r1"), ("dl4", "r2"), ("dl5", "r2")]
        assert [d.id for d in dead_letter_store.list_dead_letters(conn, "acme", "other")] == ["dl9"]


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
