"""End to end (issue 5 acceptance): the other sync directions through the real stack — the dev
server, the sandbox CRMs over HTTPS, in-process region workers, OAuth connections, ``db_url``.

* HubSpot contacts → Salesforce Contact (upsert by ``External_Id__c`` = HubSpot ``hs_object_id``;
  contacts without the required LastName are dead-lettered REQUIRED_FIELD_MISSING and counted);
* Salesforce Account → HubSpot companies (upsert by the unique company property ``external_id`` =
  the tenant's keyed pseudonym of the Account Id: stable, so upserts and deletes find the company,
  and the Salesforce id itself never reaches HubSpot);
* HubSpot companies → Salesforce Account (upsert by ``External_Id__c`` = ``hs_object_id``).

Each case has its own tenant, instruction and sync, runs a full sync and then an incremental one
after modifications and deletes (archives) at the source, and checks that exactly the source lands
(count, key fields, no duplicates by external id), that fields outside the instruction are absent
at the destination, that lineage counts match the destination and that the ledger verifies offline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api import syncops
from api.demo import _workers, connect_crm, lineage_summary, verify_ledger
from connectors.oauth import OAuthService, configs_from_sandbox
from governance.lineage import CheckpointSigner
from governance.policy import ProcessingInstruction
from governance.pseudonym import Pseudonymizer
from sandbox.fake import BASE_EPOCH_MS
from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from schemas.settings import Settings
from schemas.sync import Progress, SyncMode, SyncStatus
from store import syncs as store
from workers.client import Connected, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The registry endpoint instance of each sandbox CRM (its loopback host names no region).
ENDPOINT = {"salesforce": "eu", "hubspot": "eu1"}
# Properties a CRM sets on every record it stores, whatever was written.
BOOKKEEPING = {
    "salesforce": {"Name"},  # Contact: derived from FirstName + LastName
    "hubspot": {"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"},
}
# When source records created as test data "happened" (long before the full sync reads them).
LONG_AGO_MS = BASE_EPOCH_MS + 86_400_000


@dataclass(frozen=True)
class Direction:
    """One sync: source stream → destination stream with a field mapping and an upsert key."""

    tenant: str
    source: str
    source_stream: str
    destination: str
    destination_stream: str
    mapping: dict[str, str]
    source_key: str
    destination_id: str
    cursor_field: str
    pseudonymize: tuple[str, ...] = ()

    @property
    def sync_id(self) -> str:
        return f"{self.source_stream}-to-{self.destination}-{self.destination_stream}".lower()

    def instruction(self) -> ProcessingInstruction:
        """The controller's instruction: exactly the mapped fields, the key and the cursor."""
        fields = sorted({*self.mapping, self.source_key, self.cursor_field})
        return ProcessingInstruction.model_validate(
            {
                "tenant": self.tenant,
                "version": 1,
                "purpose": "crm-sync",
                "data_categories": ["contact_details", "business_contact"],
                "allowed_fields": {self.source_stream: fields},
                "pseudonymize": {self.source_stream: list(self.pseudonymize)} if self.pseudonymize else {},
                "retention_days": 7,
                "permitted_regions": ["eea"],
                "permitted_subprocessors": ["salesforce", "hubspot"],
                "valid_from": "2025-01-01T00:00:00Z",
            }
        )

    def allowed_at_destination(self) -> set[str]:
        return {*self.mapping.values(), self.destination_id, *BOOKKEEPING[self.destination]}


HS_CONTACTS_TO_SF = Direction(
    tenant="hs-contacts",
    source="hubspot",
    source_stream="contacts",
    destination="salesforce",
    destination_stream="Contact",
    mapping={"email": "Email", "firstname": "FirstName", "lastname": "LastName"},
    source_key="hs_object_id",
    destination_id="External_Id__c",
    cursor_field="lastmodifieddate",
)
SF_ACCOUNTS_TO_HS = Direction(
    tenant="sf-accounts",
    source="salesforce",
    source_stream="Account",
    destination="hubspot",
    destination_stream="companies",
    mapping={
        "Name": "name",
        "Industry": "industry",
        "NumberOfEmployees": "numberofemployees",
        "BillingCity": "city",
        "BillingCountry": "country",
    },
    source_key="Id",
    destination_id="external_id",
    cursor_field="SystemModstamp",
    pseudonymize=("Id",),
)
HS_COMPANIES_TO_SF = Direction(
    tenant="hs-companies",
    source="hubspot",
    source_stream="companies",
    destination="salesforce",
    destination_stream="Account",
    mapping={
        "name": "Name",
        "industry": "Industry",
        "numberofemployees": "NumberOfEmployees",
        "city": "BillingCity",
        "country": "BillingCountry",
    },
    source_key="hs_object_id",
    destination_id="External_Id__c",
    cursor_field="hs_lastmodifieddate",
)


@dataclass
class World:
    settings: Settings
    sandbox: RunningSandbox
    connected: Connected
    oauth: OAuthService
    ca: SandboxCA

    @property
    def sf(self) -> Any:
        return self.sandbox.salesforce

    @property
    def hs(self) -> Any:
        return self.sandbox.hubspot

    def crm(self, name: str) -> Any:
        return self.sf if name == "salesforce" else self.hs


@pytest.fixture
def sandbox(settings: Settings) -> Iterator[RunningSandbox]:
    with start_sandbox(settings.data_dir) as sb:  # each test seeds what its direction reads
        yield sb


@pytest.fixture
async def world(settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[World]:
    connected = await connect(settings)
    oauth = OAuthService(connected.engine, connected.vault, configs_from_sandbox(sandbox.info))
    try:
        yield World(settings, sandbox, connected, oauth, SandboxCA(Path(sandbox.info.ca_path).parent))
    finally:
        oauth.close()
        connected.engine.dispose()


async def _create_sync(world: World, d: Direction) -> None:
    """Tenant (EEA) with both CRMs connected through OAuth, instruction v1 and the sync."""
    connections = {
        crm: await asyncio.to_thread(connect_crm, world.oauth, d.tenant, crm, world.ca)
        for crm in ("salesforce", "hubspot")
    }
    ins = d.instruction()
    now = datetime.now(UTC)
    spec = store.SyncSpec(
        tenant=d.tenant,
        id=d.sync_id,
        name=f"{d.source} {d.source_stream} to {d.destination} {d.destination_stream}",
        source_connection_id=connections[d.source],
        source_stream=d.source_stream,
        source_endpoint=ENDPOINT[d.source],
        destination_connection_id=connections[d.destination],
        destination_stream=d.destination_stream,
        destination_endpoint=ENDPOINT[d.destination],
        mapping=d.mapping,
        destination_id_property=d.destination_id,
        source_key_property=d.source_key,
        instruction_version=ins.version,
    )
    with world.connected.engine.begin() as conn:
        store.create_tenant(
            conn,
            id=d.tenant,
            name=f"{d.tenant} GmbH",
            home_region="eea",
            authorised_subprocessors=["salesforce", "hubspot"],
            now=now,
        )
        store.add_instruction(
            conn,
            tenant=d.tenant,
            version=ins.version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=now,
        )
        store.create_sync(conn, spec, now=now)


async def _run(world: World, d: Direction, mode: SyncMode) -> Progress:
    client = world.connected.client
    h = await syncops.start(
        client, d.tenant, d.sync_id, mode=mode, task_queue=world.settings.temporal.control_task_queue
    )
    await asyncio.wait_for(h.result(), timeout=300)
    progress = await syncops.progress(client, d.tenant, d.sync_id)
    assert progress is not None
    return progress


def _text(value: Any) -> str | None:
    """A value as both CRMs can be compared on: HubSpot stores strings, and "" is unset."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_destination(world: World, d: Direction, expected: list[dict[str, Any]]) -> None:
    """The destination holds exactly ``expected`` (source records), keyed by the external id, with
    the mapped values and nothing outside the instruction."""
    pseudonyms = Pseudonymizer(world.connected.vault)

    def key(record: dict[str, Any]) -> str:
        value = record[d.source_key]
        if d.source_key in d.pseudonymize:
            return str(pseudonyms.pseudonymize(d.tenant, value))
        return str(value)

    source = {key(r): r for r in expected}
    dest = world.crm(d.destination).live_records(d.destination_stream)
    keys = [r.get(d.destination_id) for r in dest]
    duplicated = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicated, f"records duplicated at the destination by {d.destination_id}: {duplicated[:5]}"
    assert set(keys) == set(source), (
        f"destination ≠ source: {len(set(keys) - set(source))} extra, {len(set(source) - set(keys))} missing"
    )
    allowed = d.allowed_at_destination()
    for r in dest:
        src = source[r[d.destination_id]]
        for s, t in d.mapping.items():
            assert _text(r.get(t)) == _text(src.get(s)), f"{t} of {r[d.destination_id]} ≠ source {s}"
        present = {k for k, v in r.items() if v not in (None, "") and k != "id"}
        outside = present - allowed
        assert not outside, f"fields outside the instruction reached the destination: {outside}"


def _source(world: World, d: Direction) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = world.crm(d.source).live_records(d.source_stream)
    if d.source == "hubspot":
        return [{**r, "hs_object_id": r["id"]} for r in rows]
    return [{**r, "Id": r["id"]} for r in rows]


def _check_ledger(world: World, d: Direction) -> dict[str, int]:
    summary = lineage_summary(world.connected.engine, d.tenant)
    signer = CheckpointSigner.load_or_create(world.settings.data_dir / "ledger.pem")
    result = verify_ledger(
        world.connected.engine, d.tenant, signer, world.settings.data_dir / f"{d.tenant}-report.json"
    )
    assert result.ok, result.reason
    counts: dict[str, int] = summary["counts"]
    return counts


def _dead_letter_codes(world: World, d: Direction) -> Counter[str]:
    with world.connected.engine.connect() as conn:
        letters = store.list_dead_letters(conn, d.tenant, d.sync_id)
    return Counter(dl.error_code for dl in letters)


@contextlib.contextmanager
def _stamped_after(hs: Any, full: Progress) -> Iterator[None]:
    """HubSpot changes stamped 1 ms after the position the full read ended at, as if made while it
    ran. (An incremental read's window ends ``search_settle_s`` before it starts — HubSpot's search
    index lags writes — so changes stamped "now" would only be seen by a read that much later.)"""
    assert full.cursor is not None and full.cursor.isdigit()
    hs.store.clock.freeze(int(full.cursor) + 1)
    try:
        yield
    finally:
        hs.store.clock.unfreeze()


async def test_hubspot_contacts_to_salesforce_contacts(settings, world: World) -> None:
    d = HS_CONTACTS_TO_SF
    hs = world.hs
    hs.seed({"contacts": 1_000})
    hs.store.clock.freeze(LONG_AGO_MS)  # test data created long before the sync
    try:
        nameless = [
            hs.create_record("contacts", {"email": f"nameless{i}@example.test", "firstname": f"Anon{i}"})
            for i in range(12)
        ]
    finally:
        hs.store.clock.unfreeze()
    await _create_sync(world, d)

    def landing() -> list[dict[str, Any]]:  # Salesforce requires LastName: only these can land
        return [r for r in _source(world, d) if r.get("lastname")]

    async with _workers(settings):
        full = await _run(world, d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (1_012, 1_000, 12)
        assert _dead_letter_codes(world, d) == {"REQUIRED_FIELD_MISSING": 12}
        _check_destination(world, d, landing())

        ids = sorted((r["id"] for r in hs.live_records("contacts") if r["id"] not in nameless), key=int)
        with _stamped_after(hs, full):
            for i, cid in enumerate(ids[:30]):
                hs.update_record("contacts", cid, {"firstname": f"Renamed{i}"})
            for cid in ids[30:50]:
                hs.delete_record("contacts", cid)
            hs.update_record("contacts", nameless[0], {"lastname": "Named"})  # fixed at the source: lands
            for i in range(5):
                new = {"email": f"new{i}@example.test", "firstname": "New", "lastname": f"Contact{i}"}
                hs.create_record("contacts", new)
        inc = await _run(world, d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed, inc.counts.failed) == (36, 36, 0)
    assert inc.counts.deleted == 20
    _check_destination(world, d, landing())
    destination = world.sf.live_records("Contact")
    assert len(destination) == 1_000 - 20 + 1 + 5

    counts = _check_ledger(world, d)
    assert counts["pull.records"] == 1_012 + 36
    assert counts["pull.deleted"] == 20
    assert counts["push.pushed"] == 1_000 + 36  # lineage counts = destination writes
    assert counts["push.failed"] == 12
    assert counts["delete.deleted"] == 20
    assert counts["push.created"] - counts["delete.deleted"] == len(destination)


async def test_salesforce_accounts_to_hubspot_companies(settings, world: World) -> None:
    d = SF_ACCOUNTS_TO_HS
    sf = world.sf
    sf.seed({"Account": 800})
    await _create_sync(world, d)

    async with _workers(settings):
        full = await _run(world, d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (800, 800, 0)
        _check_destination(world, d, _source(world, d))

        ids = sorted(r["id"] for r in sf.live_records("Account"))
        for i, aid in enumerate(ids[:25]):
            sf.update_record("Account", aid, {"Name": f"Renamed {i} AG", "NumberOfEmployees": 7 + i})
        for aid in ids[25:40]:
            sf.delete_record("Account", aid)
        inc = await _run(world, d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed, inc.counts.failed) == (25, 25, 0)
    assert inc.counts.deleted == 15
    _check_destination(world, d, _source(world, d))
    destination = world.hs.live_records("companies")
    assert len(destination) == 800 - 15

    counts = _check_ledger(world, d)
    assert counts["pull.records"] == 800 + 25
    assert counts["pull.deleted"] == 15
    assert counts["push.pushed"] == 800 + 25
    assert counts["delete.deleted"] == 15
    assert counts["push.created"] - counts["delete.deleted"] == len(destination)


async def test_hubspot_companies_to_salesforce_accounts(settings, world: World) -> None:
    d = HS_COMPANIES_TO_SF
    hs = world.hs
    hs.seed({"companies": 800})
    await _create_sync(world, d)

    async with _workers(settings):
        full = await _run(world, d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (800, 800, 0)
        _check_destination(world, d, _source(world, d))

        ids = sorted((r["id"] for r in hs.live_records("companies")), key=int)
        with _stamped_after(hs, full):
            for i, cid in enumerate(ids[:25]):
                hs.update_record("companies", cid, {"name": f"Renamed {i} SE", "city": "Lyon"})
            for cid in ids[25:40]:
                hs.delete_record("companies", cid)
        inc = await _run(world, d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed, inc.counts.failed) == (25, 25, 0)
    assert inc.counts.deleted == 15
    _check_destination(world, d, _source(world, d))
    destination = world.sf.live_records("Account")
    assert len(destination) == 800 - 15

    counts = _check_ledger(world, d)
    assert counts["pull.records"] == 800 + 25
    assert counts["pull.deleted"] == 15
    assert counts["push.pushed"] == 800 + 25
    assert counts["delete.deleted"] == 15
    assert counts["push.created"] - counts["delete.deleted"] == len(destination)
