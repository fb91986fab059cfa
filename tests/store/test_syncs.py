"""The tenant, instruction and sync stores: round trips, immutability, cursor, status, connections.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Connection, Engine

from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError
from schemas.sync import SyncWriteMode
from store import connections
from store import instructions as instruction_store
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


def test_a_relationship_sync_takes_only_the_write_modes_that_follow_its_pairs(db_engine: Engine) -> None:
    """A sync carrying only links (an association stream on either side) creates a link when a pair
    appears and removes it when it goes: update-only and create-only are refused naming the fix; a
    record sync takes every mode its destination can honour."""
    roles = spec(
        id="roles",
        source_stream="OpportunityContactRole",
        destination_stream="deals/contacts",
        mapping={"OpportunityId": "@deals", "ContactId": "@contacts"},
        destination_id_property="hs_object_id",
        source_key_property="Id",
        transforms=(),
    )
    back = spec(
        id="roles-back",
        source_connection_id="c-hs",
        destination_connection_id="c-sf",
        source_stream="deals/contacts",
        destination_stream="OpportunityContactRole",
        mapping={"@deals": "OpportunityId", "@contacts": "ContactId"},
        destination_id_property="Id",
        source_key_property="id",
        transforms=(),
    )
    with db_engine.begin() as conn:
        _connection(conn, "c-sf", "acme", "salesforce")
        _connection(conn, "c-hs", "acme", "hubspot")
        for s in (spec(), roles, back):
            sync_store.create_sync(conn, s, now=NOW)
        for sync, stream in (("roles", "deals/contacts"), ("roles-back", "deals/contacts")):
            for mode in (SyncWriteMode.UPDATE_ONLY, SyncWriteMode.CREATE_ONLY):
                with pytest.raises(
                    ConfigError, match=rf"'{mode.value}' does not apply to {stream}.*'upsert'"
                ):
                    sync_store.set_sync_write_mode(conn, "acme", sync, mode, now=NOW)
            sync_store.set_sync_write_mode(conn, "acme", sync, SyncWriteMode.MIRROR, now=NOW)
        sync_store.set_sync_write_mode(conn, "acme", "contacts", SyncWriteMode.UPDATE_ONLY, now=NOW)
    with db_engine.connect() as conn:
        modes = {s: sync_store.get_sync(conn, "acme", s) for s in ("contacts", "roles", "roles-back")}
    assert {s: r.spec.write_mode for s, r in modes.items() if r is not None} == {
        "contacts": SyncWriteMode.UPDATE_ONLY,
        "roles": SyncWriteMode.MIRROR,
        "roles-back": SyncWriteMode.MIRROR,
    }
