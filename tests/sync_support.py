"""The scaffolding of the tests that run syncs through the whole stack (``tests/e2e``, ``tests/chaos``):
the session dev server, the sandbox CRMs over HTTPS on loopback, OAuth connections and the database
of ``db_url`` (SQLite, or PostgreSQL with ``CRMHUB_TEST_DATABASE_URL``).

Fixtures — defined here once, offered to every test by ``tests/e2e/conftest.py`` and
``tests/chaos/conftest.py``. A module overrides the small ones to say what differs, e.g.::

    @pytest.fixture
    def worker_options() -> dict[str, Any]:
        return {"pages_per_activity": 1}

* ``worker_options``: ``Settings.worker`` fields of the run (default: none; tests/e2e: 2 pages per
  activity, continue-as-new after 3 batches);
* ``seed_counts``: what the sandbox CRMs hold at start (``start_sandbox``; default: nothing);
* ``settings``: :func:`tests.stack.stack_settings` — this test's database and data dir, the session
  dev server, task queues of its own;
* ``sandbox``: both sandbox CRMs, serving until the test ends (a module that needs more in them
  overrides it with a fixture ``sandbox(sandbox)`` that adds records or fault injectors);
* ``world``: a :class:`World` — Temporal client + DB, an OAuth service for the sandbox, its CA;
* ``demo_tenant`` (override it) and ``demo``: that tenant with both CRMs connected by OAuth and the
  demo's Salesforce → HubSpot contacts sync :data:`DEMO_SYNC` (:func:`tests.stack.connect_demo_tenant`).

Helpers: a sync :class:`Direction` (stream → stream, mapping, upsert key, the instruction of exactly
those fields) with the contacts directions :data:`SF_CONTACTS_TO_HS` and :data:`HS_CONTACTS_TO_SF`;
:func:`create_sync` (tenant, OAuth connections, instruction, sync); :func:`run_sync` / :meth:`World.run`
(one run awaited to its end); :func:`check_destination`, :func:`source_records`, :func:`check_ledger`;
:func:`worker_env` for a ``crmhub worker`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from api import syncops
from api.demo import connect_crm, lineage_summary, verify_ledger
from governance.lineage import CheckpointSigner
from governance.policy import ProcessingInstruction
from governance.pseudonym import Pseudonymizer
from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.tls import SandboxCA
from schemas.settings import Settings
from schemas.sync import Progress, SyncMode, SyncWriteMode
from services.credentials import OAuthService
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from tests.stack import connect_demo_tenant, sandbox_oauth_configs, stack_settings
from workers.client import Connected, connect

__all__ = [
    "DEMO_SYNC",
    "ENDPOINT",
    "HS_CONTACTS_TO_SF",
    "SF_CONTACTS_TO_HS",
    "Direction",
    "World",
    "bookkeeping",
    "check_destination",
    "check_ledger",
    "create_sync",
    "demo",
    "demo_tenant",
    "open_world",
    "run_sync",
    "sandbox",
    "seed_counts",
    "settings",
    "source_records",
    "worker_env",
    "worker_options",
    "world",
]

DEMO_SYNC = "contacts"  # the sync id of the demo tenant's Salesforce → HubSpot contacts sync
# The registry endpoint instance of each sandbox CRM (its loopback host names no region).
ENDPOINT = {"salesforce": "eu", "hubspot": "eu1"}


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
    data_categories: tuple[str, ...] = ("contact_details", "business_contact")

    @property
    def sync_id(self) -> str:
        return f"{self.source_stream}-to-{self.destination}-{self.destination_stream}".lower()

    def instruction(self, version: int = 1) -> ProcessingInstruction:
        """The controller's instruction: exactly the mapped fields, the key and the cursor."""
        fields = sorted({*self.mapping, self.source_key, self.cursor_field})
        return ProcessingInstruction.model_validate(
            {
                "tenant": self.tenant,
                "version": version,
                "purpose": "crm-sync",
                "data_categories": list(self.data_categories),
                "allowed_fields": {self.source_stream: fields},
                "pseudonymize": {self.source_stream: list(self.pseudonymize)} if self.pseudonymize else {},
                "retention_days": 7,
                "permitted_regions": ["eea"],
                "permitted_subprocessors": ["salesforce", "hubspot"],
                "valid_from": "2025-01-01T00:00:00Z",
            }
        )

    def allowed_at_destination(self) -> set[str]:
        """The fields the destination may hold: the mapped ones, the upsert key and its bookkeeping."""
        return {
            *self.mapping.values(),
            self.destination_id,
            *bookkeeping(self.destination, self.destination_stream),
        }


def bookkeeping(crm: str, stream: str) -> set[str]:
    """Properties a CRM sets on every record of ``stream`` it stores, whatever was written: Salesforce
    derives a Contact's Name; HubSpot stamps id, creation and modification (``lastmodifieddate`` on
    contacts, ``hs_lastmodifieddate`` on every other object)."""
    if crm == "salesforce":
        return {"Name"}
    return {
        "hs_object_id",
        "createdate",
        "lastmodifieddate" if stream == "contacts" else "hs_lastmodifieddate",
    }


SF_CONTACTS_TO_HS = Direction(
    tenant="sf-contacts",
    source="salesforce",
    source_stream="Contact",
    destination="hubspot",
    destination_stream="contacts",
    mapping={"Email": "email", "FirstName": "firstname", "LastName": "lastname"},
    source_key="Email",
    destination_id="email",
    cursor_field="SystemModstamp",
)
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


async def run_sync(
    connected: Connected,
    settings: Settings,
    tenant: str,
    sync_id: str,
    mode: SyncMode = SyncMode.FULL,
    *,
    may_fail: bool = False,
    timeout_s: float = 300,
) -> Progress:
    """Start a run of the sync and wait for its end (at most ``timeout_s``); its progress. A failed or
    refused run raises ``WorkflowFailureError`` unless ``may_fail`` (then its progress says why)."""
    h = await syncops.start(
        connected.client, tenant, sync_id, mode=mode, task_queue=settings.temporal.control_task_queue
    )
    try:
        await asyncio.wait_for(h.result(), timeout=timeout_s)
    except WorkflowFailureError:
        if not may_fail:
            raise
    progress = await syncops.progress(connected.client, tenant, sync_id)
    assert progress is not None
    return progress


@dataclass
class World:
    """What a test of one or more directions works with: the stack and the sandbox CRMs."""

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

    async def run(self, d: Direction, mode: SyncMode = SyncMode.FULL, **options: Any) -> Progress:
        """:func:`run_sync` of ``d`` (``may_fail``, ``timeout_s``)."""
        return await run_sync(self.connected, self.settings, d.tenant, d.sync_id, mode, **options)


@contextlib.asynccontextmanager
async def open_world(settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[World]:
    """A Temporal client + DB for ``settings`` and an OAuth service for the sandbox, closed at exit."""
    connected = await connect(settings)
    oauth = OAuthService(connected.engine, connected.vault, sandbox_oauth_configs(sandbox))
    try:
        yield World(settings, sandbox, connected, oauth, SandboxCA(Path(sandbox.info.ca_path).parent))
    finally:
        oauth.close()
        connected.engine.dispose()


async def create_sync(
    world: World,
    d: Direction,
    *,
    extra_scopes: Mapping[str, Sequence[str]] | None = None,
    write_mode: SyncWriteMode = SyncWriteMode.MIRROR,
) -> None:
    """Tenant (EEA) with both CRMs connected through OAuth (asking, per CRM, ``extra_scopes`` too),
    instruction v1 and the sync (``mirror`` unless told: these tests check the destination equals
    the source, deletes included)."""
    extra = extra_scopes or {}
    connections = {
        crm: await asyncio.to_thread(
            connect_crm, world.oauth, d.tenant, crm, world.ca, extra_scopes=tuple(extra.get(crm, ()))
        )
        for crm in ("salesforce", "hubspot")
    }
    ins = d.instruction()
    now = datetime.now(UTC)
    spec = sync_store.SyncSpec(
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
        write_mode=write_mode,
    )
    with world.connected.engine.begin() as conn:
        tenant_store.create_tenant(
            conn,
            id=d.tenant,
            name=f"{d.tenant} GmbH",
            home_region="eea",
            authorised_subprocessors=["salesforce", "hubspot"],
            now=now,
        )
        instruction_store.add_instruction(
            conn,
            tenant=d.tenant,
            version=ins.version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=now,
        )
        sync_store.create_sync(conn, spec, now=now)


def _text(value: Any) -> str | None:
    """A value as both CRMs can be compared on: HubSpot stores strings, and "" is unset."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_destination(world: World, d: Direction, expected: list[dict[str, Any]]) -> None:
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


def source_records(world: World, d: Direction) -> list[dict[str, Any]]:
    """The source's live records, each with its id also under the id field the sync reads."""
    rows: list[dict[str, Any]] = world.crm(d.source).live_records(d.source_stream)
    if d.source == "hubspot":
        return [{**r, "hs_object_id": r["id"]} for r in rows]
    return [{**r, "Id": r["id"]} for r in rows]


def check_ledger(world: World, d: Direction) -> dict[str, int]:
    """The tenant's ledger verifies offline against its signed checkpoint; its lineage counts."""
    summary = lineage_summary(world.connected.engine, d.tenant)
    signer = CheckpointSigner.load_or_create(world.settings.data_dir / "ledger.pem")
    result = verify_ledger(
        world.connected.engine, d.tenant, signer, world.settings.data_dir / f"{d.tenant}-report.json"
    )
    assert result.ok, result.reason
    counts: dict[str, int] = summary["counts"]
    return counts


def worker_env(settings: Settings, **worker: str) -> dict[str, str]:
    """The environment of a ``crmhub worker`` subprocess for ``settings`` (this process's ``CRMHUB_*``
    variables left out), with ``worker`` as ``CRMHUB_WORKER__*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        CRMHUB_DATA_DIR=str(settings.data_dir),
        CRMHUB_DATABASE_URL=settings.effective_database_url,
        CRMHUB_TEMPORAL__ADDRESS=settings.temporal.address,
        CRMHUB_TEMPORAL__CONTROL_TASK_QUEUE=settings.temporal.control_task_queue,
        CRMHUB_REGIONS__EU__TASK_QUEUE=settings.task_queue("eu"),
        CRMHUB_REGIONS__US__TASK_QUEUE=settings.task_queue("us"),
    )
    env.update({f"CRMHUB_WORKER__{name.upper()}": value for name, value in worker.items()})
    return env


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def worker_options() -> dict[str, Any]:
    """``Settings.worker`` fields for this test's stack; a module overrides it to change them."""
    return {}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]] | None:
    """What the sandbox CRMs hold when they start (``start_sandbox``); nothing unless overridden."""
    return None


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any, worker_options: dict[str, Any]) -> Settings:
    """Settings pointing at the session dev server, this test's database and fresh task queues."""
    return stack_settings(tmp_path / "data", db_url, temporal_env, **worker_options)


@pytest.fixture
def sandbox(settings: Settings, seed_counts: dict[str, dict[str, int]] | None) -> Iterator[RunningSandbox]:
    """Both sandbox CRMs over HTTPS on loopback, holding ``seed_counts``."""
    with start_sandbox(settings.data_dir, seed_counts=seed_counts) as sb:
        yield sb


@pytest.fixture
async def world(settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[World]:
    """:func:`open_world` for this test."""
    async with open_world(settings, sandbox) as w:
        yield w


@pytest.fixture
def demo_tenant() -> str:
    """The tenant of the ``demo`` fixture: a module that uses ``demo`` names its own."""
    raise NotImplementedError("override the demo_tenant fixture in the test module")


@pytest.fixture
async def demo(settings: Settings, sandbox: RunningSandbox, demo_tenant: str) -> AsyncIterator[Connected]:
    """A Temporal client + DB; ``demo_tenant`` with both CRMs connected by OAuth and the demo sync
    :data:`DEMO_SYNC` (Salesforce Contact → HubSpot contacts)."""
    connected = await connect_demo_tenant(settings, sandbox, demo_tenant, DEMO_SYNC)
    yield connected
    connected.engine.dispose()
