"""The syncs page after schema drift: quarantined counts, the drift, a refused run's reason and what to
do; pointing a sync at a new instruction version (checked: it must allow every field the sync reads)
from the syncs page and from the instruction page (all chosen syncs move or none), with CSRF and
tenant isolation. The store holds what a drifted run and a refused plan record (see
tests/e2e/test_drift_resume_cli.py for the same through the whole stack)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from governance.lineage import Ledger
from governance.policy import PlanRefused, ProcessingInstruction, check_types
from schemas.lineage import EventKind, LineageEvent
from store import connections as connection_store
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import runs as run_store
from store import syncs as sync_store
from tests.api.web.conftest import csrf_of, login, make_tenant, page_csrf

SYNC = "contacts"
MAPPING = {"Email": "email", "Title": "jobtitle", "Lead_Score__c": "lead_score"}
DRIFT = ["added Job_Title__c (string)", "dropped Title", "retyped Lead_Score__c: double → string"]
HELD = 3


def instruction(tenant: str, version: int, fields: list[str]) -> ProcessingInstruction:
    return ProcessingInstruction.model_validate(
        {
            "tenant": tenant,
            "version": version,
            "purpose": "crm-sync",
            "allowed_fields": {"Contact": [*fields, "Id", "SystemModstamp"]},
            "retention_days": 7,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"],
            "valid_from": "2025-01-01T00:00:00Z",
        }
    )


def add_instruction(engine: Engine, ins: ProcessingInstruction) -> None:
    with engine.begin() as conn:
        instruction_store.add_instruction(
            conn, tenant=ins.tenant, version=ins.version, content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash, now=datetime.now(UTC),
        )  # fmt: skip


def seed_drifted_sync(engine: Engine, tenant: str, sync_id: str = SYNC) -> ProcessingInstruction:
    """A sync under instruction v1 whose last full run quarantined :data:`HELD` records and saw
    :data:`DRIFT`, and whose next run was refused for schema drift — as plan and pull record them."""
    now = datetime.now(UTC)
    v1 = instruction(tenant, 1, list(MAPPING))
    add_instruction(engine, v1)
    conn_id = str(uuid.uuid4())
    with engine.begin() as conn:
        connection_store.insert_connection(
            conn, id=conn_id, tenant=tenant, provider="salesforce",
            instance_url="https://acme.my.salesforce.com", scopes=["api"], access_token_sealed=b"sealed",
            refresh_token_sealed=b"sealed", access_expires_at=None, now=now,
        )  # fmt: skip
        sync_store.create_sync(
            conn,
            sync_store.SyncSpec(
                tenant=tenant, id=sync_id, name=f"{sync_id} to HubSpot", source_connection_id=conn_id,
                source_stream="Contact", destination_connection_id=conn_id, destination_stream="contacts",
                mapping=MAPPING, destination_id_property="email", source_key_property="Email",
                instruction_version=1,
            ),
            now=now,
        )  # fmt: skip
        full = f"run-full-{sync_id}"
        run_store.start_run(
            conn, run_id=full, tenant=tenant, sync_id=sync_id, mode="full", trigger="manual",
            status="running", now=now,
        )  # fmt: skip
        run_store.set_planned_schema(
            conn, full, {"Email": "email", "Title": "string", "Lead_Score__c": "double"}
        )
        sync_store.set_accepted_types(
            conn, tenant, sync_id, instruction_hash=v1.content_hash,
            types={"Email": "email", "Title": "string", "Lead_Score__c": "double"},
        )  # fmt: skip
        run_store.add_run_drift(conn, full, DRIFT)
        dead_letter_store.add_dead_letters(
            conn,
            [
                dead_letter_store.DeadLetter(
                    f"q-{sync_id}-{i}",
                    tenant,
                    sync_id,
                    full,
                    "batch-0",
                    f"kh_{i:032x}",
                    b"sealed",
                    dead_letter_store.QUARANTINED,
                    "Lead_Score__c: planned type double, observed text",
                    now,
                )
                for i in range(HELD)
            ],
        )
        run_store.finish_run(
            conn, full, status="completed", counts={"pulled": 10, "pushed": 7, "quarantined": HELD},
            message="", now=now,
        )  # fmt: skip
    refused = f"run-refused-{sync_id}"
    try:
        check_types(v1, "Contact", {"Lead_Score__c": "double"}, {"Lead_Score__c": "string"})
        raise AssertionError("check_types accepted a retyped field")
    except PlanRefused as exc:
        reason, message = exc.reason, exc.message
    details: dict[str, Any] = {k: ",".join(v) if isinstance(v, list) else v for k, v in reason.items()}
    Ledger(engine, tenant).append(
        [
            LineageEvent(
                kind=EventKind.REFUSAL,
                tenant=tenant,
                run_id=refused,
                sync_id=sync_id,
                instruction_version=1,
                instruction_hash=v1.content_hash,
                purpose="crm-sync",
                details=details,
            )
        ]
    )
    with engine.begin() as conn:
        run_store.start_run(
            conn, run_id=refused, tenant=tenant, sync_id=sync_id, mode="-", trigger="-", status="refused",
            now=datetime.now(UTC),
        )  # fmt: skip
        run_store.finish_run(
            conn, refused, status="refused", counts={}, message=message, now=datetime.now(UTC)
        )
    return v1


def cited(engine: Engine, tenant: str, sync_id: str = SYNC) -> tuple[int, dict[str, str]]:
    with engine.connect() as conn:
        row = sync_store.get_sync(conn, tenant, sync_id)
    assert row is not None
    return row.spec.instruction_version, dict(row.spec.mapping)


async def test_syncs_page_shows_quarantine_drift_refusal_and_moves_a_sync(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    seed_drifted_sync(db_engine, "acme")
    assert (await login(client, *tenant_user)).status_code == 303
    page = (await client.get("/syncs")).text
    assert f"{HELD} held for this sync" in page and "quarantined" in page.lower()
    for line in DRIFT:
        assert f"<code>{line}</code>" in page
    assert "Latest run refused (rule <code>schema_drift</code>: Lead_Score__c)" in page
    assert "re-issue the instruction" in page
    assert 'href="/instructions">Open the instruction editor' in page  # no newer version yet
    detail = (await client.get(f"/syncs/{SYNC}")).text
    assert "Needs attention" in detail and "schema_drift" in detail

    # v2 allows the renamed field instead of Title, which the sync still maps: refused, nothing moves
    add_instruction(db_engine, instruction("acme", 2, ["Email", "Job_Title__c", "Lead_Score__c"]))
    page = (await client.get("/syncs")).text
    assert "Point at instruction v2" in page
    r = await client.post(f"/syncs/{SYNC}/instruction", data={"csrf_token": csrf_of(page), "version": "2"})
    assert r.status_code == 400
    assert "does not allow Contact.Title" in r.text and "jobtitle" in r.text
    assert cited(db_engine, "acme") == (1, MAPPING)
    assert (await client.post(f"/syncs/{SYNC}/instruction", data={"version": "2"})).status_code == 403

    # v3 allows every field the sync reads: the button (default: the latest version) moves it
    add_instruction(db_engine, instruction("acme", 3, [*MAPPING, "Job_Title__c"]))
    r = await client.post(
        f"/syncs/{SYNC}/instruction", data={"csrf_token": await page_csrf(client, "/syncs")}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/syncs/{SYNC}"
    assert cited(db_engine, "acme") == (3, MAPPING)
    detail = (await client.get(f"/syncs/{SYNC}")).text
    assert "cites instruction v3 since: its next run plans again" in detail
    assert "The next run will be refused" not in detail


async def test_instruction_page_moves_the_tenants_syncs_all_or_none(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    seed_drifted_sync(db_engine, "acme")
    seed_drifted_sync(db_engine, "acme", "leads")
    with db_engine.begin() as conn:  # "leads" no longer reads Title
        sync_store.set_sync_mapping(conn, "acme", "leads", {"Email": "email"}, now=datetime.now(UTC))
    add_instruction(db_engine, instruction("acme", 2, ["Email", "Job_Title__c", "Lead_Score__c"]))
    assert (await login(client, *tenant_user)).status_code == 303
    page = (await client.get("/instructions?saved=2")).text
    assert "Instruction v2 saved." in page and "Move syncs to v2" in page
    assert 'name="sync_id" value="contacts"' in page and 'name="sync_id" value="leads"' in page

    both = {"csrf_token": csrf_of(page), "version": "2", "sync_id": [SYNC, "leads"]}
    r = await client.post("/instructions/move-syncs", data=both)
    assert r.status_code == 400
    assert "does not allow Contact.Title" in r.text and "Nothing was moved." in r.text
    assert cited(db_engine, "acme")[0] == 1 and cited(db_engine, "acme", "leads")[0] == 1

    r = await client.post("/instructions/move-syncs", data={**both, "sync_id": ["leads"]})
    assert r.status_code == 303 and r.headers["location"] == "/syncs?moved=2"
    assert cited(db_engine, "acme", "leads") == (2, {"Email": "email"})
    assert cited(db_engine, "acme")[0] == 1
    assert "Syncs moved to instruction v2." in (await client.get("/syncs?moved=2")).text


async def test_moving_syncs_is_tenant_scoped(
    client: httpx.AsyncClient, db_engine: Engine, tenant_user: tuple[str, str]
) -> None:
    make_tenant(db_engine, "tenantb")
    seed_drifted_sync(db_engine, "tenantb", "b-sync")
    add_instruction(db_engine, instruction("tenantb", 2, list(MAPPING)))
    add_instruction(db_engine, instruction("acme", 1, list(MAPPING)))
    assert (await login(client, *tenant_user)).status_code == 303
    token = await page_csrf(client, "/instructions")
    r = await client.post("/syncs/b-sync/instruction", data={"csrf_token": token, "version": "1"})
    assert r.status_code == 404
    r = await client.post(
        "/instructions/move-syncs", data={"csrf_token": token, "version": "1", "sync_id": ["b-sync"]}
    )
    assert r.status_code == 404
    assert cited(db_engine, "tenantb", "b-sync")[0] == 1
    page = (await client.get("/syncs")).text + (await client.get("/instructions")).text
    assert "b-sync" not in page and "tenantb" not in page
