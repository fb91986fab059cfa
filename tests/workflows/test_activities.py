"""The sync activities called directly (ActivityEnvironment) against the sandbox CRMs over HTTPS.

Salesforce Contact → HubSpot contacts under a processing instruction; the database is ``db_url``
(SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL). Connections are made through the real OAuth
code flow against the sandbox (the consent step replaced by minting the code directly).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from connectors.base import Connector
from connectors.hubspot import HubSpotConnector
from governance.keys import LocalKeyringProvider
from governance.lineage import CheckpointSigner, Ledger
from governance.policy import ProcessingInstruction
from governance.pseudonym import Pseudonymizer
from governance.registry import Registry, load_registry
from governance.vault import Vault
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.connector import Page, Record, StreamState, WriteMode, WriteResult
from schemas.errors import TransientError
from schemas.lineage import EventKind, LineageEvent
from schemas.settings import load_settings
from schemas.sync import (
    BatchRef,
    FinishInput,
    PlanInput,
    PullInput,
    PushInput,
    PushResult,
    RunCounts,
    SyncMode,
    SyncPlanRef,
    SyncStatus,
)
from services.connectors import ConnectionConnectors
from services.credentials import OAuthService
from services.wiring import ActivityDeps, connector_factory, default_subprocessors_file
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import instructions as instruction_store
from store import runs as run_store
from store import staging as staging_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.engine import make_engine
from store.lineage import events as lineage_events
from tests.stack import sandbox_oauth_configs
from workflows.activities import SyncActivities
from workflows.pull import PullProgress
from workflows.push import PushProgress

pytestmark = pytest.mark.integration

CONTACTS = 240
TENANT = "acme"
MAPPING = {"Email": "email", "FirstName": "firstname", "LastName": "lastname", "Phone": "phone"}
INSTRUCTION: dict[str, Any] = {
    "tenant": TENANT,
    "version": 1,
    "purpose": "crm_sync",
    "data_categories": ["contact_details"],
    "allowed_fields": {"Contact": ["Id", "Email", "FirstName", "LastName", "Phone", "Title"]},
    "pseudonymize": {"Contact": ["Phone"]},
    "retention_days": 7,
    "permitted_regions": ["eea", "us"],
    "permitted_subprocessors": ["salesforce", "hubspot"],
    "valid_from": "2025-01-01T00:00:00Z",
}


def connect(oauth: OAuthService, vendor: Any, provider: str) -> str:
    """Connect through the authorization-code flow; the sandbox mints the code the consent page would."""
    req = oauth.begin_authorization(TENANT, provider)
    q = {k: v[0] for k, v in parse_qs(urlsplit(req.url).query).items()}
    code = vendor.oauth.issue_code(
        q["client_id"],
        req.redirect_uri,
        scope=q["scope"],
        code_challenge=q["code_challenge"],
        code_challenge_method="S256",
    )
    info = oauth.complete_authorization(
        provider, tenant=TENANT, state=req.state, code=code, redirect_uri=req.redirect_uri
    )
    return info.id


@dataclass
class World:
    sb: RunningSandbox
    engine: Engine
    deps: ActivityDeps
    acts: SyncActivities
    sf: str
    hs: str
    heartbeats: list[Any] = field(default_factory=list)

    def env(self, heartbeat_details: Sequence[Any] = ()) -> ActivityEnvironment:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, heartbeat_details=list(heartbeat_details))
        self.heartbeats = []
        env.on_heartbeat = lambda *details: self.heartbeats.append(details[0].model_dump(mode="json"))
        return env

    def add_sync(self, sync_id: str = "contacts", **over: Any) -> sync_store.SyncSpec:
        data: dict[str, Any] = {
            "tenant": TENANT,
            "id": sync_id,
            "name": "Salesforce contacts to HubSpot",
            "source_connection_id": self.sf,
            "source_stream": "Contact",
            "source_endpoint": "eu",
            "destination_connection_id": self.hs,
            "destination_stream": "contacts",
            "destination_endpoint": "eu1",
            "mapping": MAPPING,
            "destination_id_property": "email",
            "source_key_property": "Email",
            "instruction_version": 1,
            "write_mode": "mirror",  # the delete tests propagate source deletes
            **over,
        }
        spec = sync_store.SyncSpec.model_validate(data)
        with self.engine.begin() as conn:
            sync_store.create_sync(conn, spec, now=datetime.now(UTC))
        return spec

    def plan(
        self, sync_id: str = "contacts", run_id: str = "run-1", mode: SyncMode | None = None
    ) -> SyncPlanRef:
        return self.env().run(
            self.acts.plan_sync, PlanInput(tenant=TENANT, sync_id=sync_id, run_id=run_id, mode=mode)
        )

    def run(
        self,
        sync_id: str = "contacts",
        run_id: str = "run-1",
        mode: SyncMode | None = None,
        max_pages: int = 3,
    ) -> tuple[SyncPlanRef, list[BatchRef], list[PushResult]]:
        """One whole run the way the workflow drives it: plan, pull/push until done, finish."""
        plan = self.plan(sync_id, run_id, mode)
        state, seq, batches, results = plan.start_state, 0, [], []
        counts = RunCounts()
        while True:
            batch = self.env().run(
                self.acts.pull_batch, PullInput(plan=plan, state=state, batch_seq=seq, max_pages=max_pages)
            )
            result = self.env().run(self.acts.push_batch, PushInput(plan=plan, batch=batch))
            batches.append(batch)
            results.append(result)
            counts = counts.plus(pulled=batch.records, pushed=result.pushed, failed=result.failed)
            state, seq = batch.next_state, seq + 1
            if not batch.has_more:
                break
        self.env().run(
            self.acts.finish_run,
            FinishInput(plan=plan, final_state=state, counts=counts, status=SyncStatus.COMPLETED),
        )
        return plan, batches, results

    def events(self, run_id: str | None = None) -> list[LineageEvent]:
        return Ledger(self.engine, TENANT).read_events(run_id=run_id)

    def hubspot_contacts(self) -> list[dict[str, Any]]:
        hs: Any = self.sb.hubspot
        contacts: list[dict[str, Any]] = hs.live_records("contacts")
        return contacts

    def salesforce_contacts(self) -> list[dict[str, Any]]:
        sf: Any = self.sb.salesforce
        contacts: list[dict[str, Any]] = sf.live_records("Contact")
        return contacts


def make_deps(world_engine: Engine, data_dir: Path, db_url: str, oauth: OAuthService, vault: Vault,
              registry: Registry) -> ActivityDeps:  # fmt: skip
    settings = load_settings(data_dir=data_dir, database_url=db_url)
    return ActivityDeps(
        settings=settings,
        engine=world_engine,
        vault=vault,
        pseudonymizer=Pseudonymizer(vault),
        subprocessors=registry,
        signer=CheckpointSigner.generate(),
        connector_factory=connector_factory(settings, world_engine, oauth),
    )


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    data_dir = tmp_path / "data"
    engine = make_engine(db_url)
    vault = Vault(engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    with start_sandbox(data_dir, seed_counts={"salesforce": {"Contact": CONTACTS}}) as sb:
        oauth = OAuthService(engine, vault, sandbox_oauth_configs(sb))
        sf = connect(oauth, sb.salesforce, "salesforce")
        hs = connect(oauth, sb.hubspot, "hubspot")
        deps = make_deps(engine, data_dir, db_url, oauth, vault, load_registry(default_subprocessors_file()))
        instruction = ProcessingInstruction.model_validate(INSTRUCTION)
        with engine.begin() as conn:
            tenant_store.create_tenant(
                conn,
                id=TENANT,
                name="Acme GmbH",
                home_region="eea",
                authorised_subprocessors=["salesforce", "hubspot"],
                now=datetime.now(UTC),
            )
            instruction_store.add_instruction(
                conn,
                tenant=TENANT,
                version=1,
                content=instruction.model_dump(mode="json"),
                content_hash=instruction.content_hash,
                now=datetime.now(UTC),
            )
        yield World(sb, engine, deps, SyncActivities(deps, page_size=100, part_records=100), sf, hs)
        oauth.close()
    engine.dispose()


# ---- plan -------------------------------------------------------------------------------------


def test_plan_refuses_a_field_outside_the_instruction(world: World) -> None:
    world.add_sync(mapping={**MAPPING, "MailingCity": "city"})
    with pytest.raises(ApplicationError) as caught:
        world.plan()
    err = caught.value
    assert err.type == "PurposeViolation" and err.non_retryable
    assert "MailingCity" in err.message and "@" not in err.message
    (refusal,) = world.events("run-1")
    assert refusal.kind is EventKind.REFUSAL
    assert refusal.details["rule"] == "mapping" and refusal.details["field"] == "MailingCity"
    assert refusal.instruction_version == 1 and refusal.record_id_hashes == ()
    with world.engine.connect() as conn:
        run = run_store.get_run(conn, "run-1")
        sync = sync_store.get_sync(conn, TENANT, "contacts")
    assert run is not None and run.status == "refused" and "MailingCity" in run.message
    assert sync is not None and sync.status == "refused"


def test_plan_refuses_a_transfer_without_a_recorded_route(world: World, tmp_path: Path) -> None:
    data = yaml.safe_load(default_subprocessors_file().read_text())
    data["transfers"] = [t for t in data["transfers"] if t["subprocessor"] != "hubspot"]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(data))
    acts = SyncActivities(dataclasses.replace(world.deps, subprocessors=load_registry(path)))
    world.add_sync(destination_endpoint="na1")  # a US portal: EEA data would leave the EEA
    with pytest.raises(ApplicationError) as caught:
        world.env().run(acts.plan_sync, PlanInput(tenant=TENANT, sync_id="contacts", run_id="run-1"))
    assert caught.value.type == "TransferNotPermitted" and caught.value.non_retryable
    assert "eea->us" in caught.value.message
    (refusal,) = world.events("run-1")
    assert refusal.kind is EventKind.REFUSAL and refusal.details["rule"] == "transfer"
    assert (
        refusal.details["destination_region"] == "us" and refusal.details["code"] == "transfer_not_permitted"
    )


def test_plan_refuses_a_region_the_instruction_does_not_permit(world: World) -> None:
    world.add_sync(source_endpoint="na")  # a US Salesforce org
    with world.engine.begin() as conn:
        narrow = ProcessingInstruction.model_validate(
            {**INSTRUCTION, "version": 2, "permitted_regions": ["eea"]}
        )
        instruction_store.add_instruction(
            conn, tenant=TENANT, version=2, content=narrow.model_dump(mode="json"),
            content_hash=narrow.content_hash, now=datetime.now(UTC),
        )  # fmt: skip
    world.add_sync("narrow", source_endpoint="na", instruction_version=2)
    with pytest.raises(ApplicationError) as caught:
        world.plan("narrow")
    assert caught.value.type == "TransferNotPermitted"
    assert "['us']" in caught.value.message


def test_plan_carries_region_queue_mode_and_withheld_fields(world: World) -> None:
    world.add_sync()
    plan = world.plan()
    assert (plan.region, plan.task_queue) == ("eu", "crmhub-eu")
    assert plan.mode is SyncMode.FULL and plan.start_state.mode.value == "full"
    assert (plan.source, plan.destination, plan.purpose) == ("salesforce", "hubspot", "crm_sync")
    assert "MailingCity" in plan.withheld_fields and "Email" not in plan.withheld_fields
    assert plan.instruction_hash == ProcessingInstruction.model_validate(INSTRUCTION).content_hash


# ---- pull → stage → push ----------------------------------------------------------------------


def test_salesforce_contacts_land_in_hubspot_under_the_instruction(world: World) -> None:
    world.add_sync()
    plan, batches, results = world.run()
    sf = {c["Email"].lower(): c for c in world.salesforce_contacts()}
    hs = {c["email"]: c for c in world.hubspot_contacts()}
    assert len(sf) == CONTACTS and set(hs) == set(sf)
    assert sum(bool(c.get("phone")) for c in hs.values()) > CONTACTS // 2
    for email, contact in hs.items():
        source = sf[email]
        assert (contact["firstname"], contact["lastname"]) == (source["FirstName"], source["LastName"])
        if source.get("Phone"):  # pseudonymized on the way (keyed HMAC), never the number itself
            assert contact["phone"].startswith("ps_") and len(contact["phone"]) == 35
        else:
            assert not contact.get("phone")
        # Outside the instruction (MailingCity) or outside the mapping (Title): never sent.
        assert not contact.get("city") and not contact.get("jobtitle")
    assert sum(b.records for b in batches) == CONTACTS
    assert sum(r.created for r in results) == CONTACTS and sum(r.failed for r in results) == 0

    events = world.events(plan.run_id)
    pulls = [e for e in events if e.kind is EventKind.PULL]
    pushes = [e for e in events if e.kind is EventKind.PUSH]
    stores = [e for e in events if e.kind is EventKind.STORE]
    # Lineage counts equal what the destination holds; record ids only as keyed hashes.
    assert sum(e.counts["pushed"] for e in pushes) == len(hs) == CONTACTS
    assert sum(e.counts["records"] for e in pulls) == sum(e.counts["records"] for e in stores) == CONTACTS
    hashed = [h for e in pushes for h in e.record_id_hashes]
    assert len(set(hashed)) == CONTACTS and all(h.startswith("kh_") for h in hashed)
    assert {h for e in pulls for h in e.record_id_hashes} == set(hashed)
    assert all(e.counts["pseudonymized"] > 0 and e.region_to == "eea" for e in pulls)
    assert all("MailingCity" not in str(e.details["withheld"]) for e in pulls)  # never even read
    assert not [e for e in events if e.kind is EventKind.TRANSFER]  # EU org, EU portal: no transfer
    assert Ledger(world.engine, TENANT).checkpoints()[-1].size == len(world.events())

    with world.engine.connect() as conn:
        sync = sync_store.get_sync(conn, TENANT, "contacts")
        run = run_store.get_run(conn, plan.run_id)
        staged = conn.execute(select(staging_store.staging_batches)).all()
    assert sync is not None and sync.cursor is not None and sync.cursor.page_token is None
    assert run is not None and run.status == "completed" and run.counts["pushed"] == CONTACTS
    assert staged == []  # pushed batches leave nothing behind
    assert_no_plaintext(world, [c["Email"] for c in world.salesforce_contacts()])


def test_a_second_full_run_duplicates_nothing(world: World) -> None:
    world.add_sync()
    world.run(run_id="run-1")
    _, _, results = world.run(run_id="run-2", mode=SyncMode.FULL)
    assert len(world.hubspot_contacts()) == CONTACTS
    assert sum(r.created for r in results) == 0 and sum(r.updated for r in results) == CONTACTS


def test_an_incremental_run_without_changes_stages_nothing(world: World) -> None:
    world.add_sync()
    world.run(run_id="run-1")
    plan, batches, results = world.run(run_id="run-2")
    assert plan.mode is SyncMode.INCREMENTAL
    assert [(b.records, b.deleted) for b in batches] == [(0, 0)]
    assert results == [PushResult(batch_id=batches[0].batch_id, pushed=0)]
    assert not [e for e in world.events("run-2") if e.kind in (EventKind.PULL, EventKind.PUSH)]


def test_bad_records_are_dead_lettered_and_good_ones_land(world: World) -> None:
    sf: Any = world.sb.salesforce
    bad = [f"not-an-email-{i}" for i in range(3)]
    for i, email in enumerate(bad):
        sf.create_record("Contact", {"FirstName": f"Bad{i}", "LastName": "Record", "Email": email})
    world.add_sync()
    plan, _, results = world.run()
    assert len(world.hubspot_contacts()) == CONTACTS
    assert sum(r.failed for r in results) == 3 and sum(r.pushed for r in results) == CONTACTS
    with world.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, TENANT, "contacts", run_id=plan.run_id)
    assert [d.error_code for d in letters] == ["INVALID_EMAIL"] * 3
    for d in letters:
        assert d.record_key_hash.startswith("kh_")
        assert not any(email in d.error_message for email in bad)
        opened = json.loads(
            world.deps.vault.open(
                TENANT, d.sealed_record, dataset="dead-letter", object_id=d.id, purpose="crm_sync"
            )
        )
        assert opened["record"]["Email"] in bad  # the record itself is kept, sealed, for a fix and replay
    pushes = [e for e in world.events(plan.run_id) if e.kind is EventKind.PUSH]
    assert sum(e.counts["failed"] for e in pushes) == 3
    assert sum(e.counts["pushed"] for e in pushes) == len(world.hubspot_contacts())
    assert_no_plaintext(world, bad)


def test_source_deletes_are_propagated(world: World) -> None:
    world.add_sync()
    world.run(run_id="run-1")
    sf: Any = world.sb.salesforce
    victims = world.salesforce_contacts()[:2]
    for contact in victims:
        assert sf.delete_record("Contact", contact["id"])
    plan, batches, _ = world.run(run_id="run-2")
    assert sum(b.deleted for b in batches) == 2
    remaining = {c["email"] for c in world.hubspot_contacts()}
    assert len(remaining) == CONTACTS - 2
    assert not {v["Email"].lower() for v in victims} & remaining
    (delete,) = [e for e in world.events(plan.run_id) if e.kind is EventKind.DELETE]
    assert delete.counts == {"deleted": 2, "failed": 0, "not_at_destination": 0}
    hashes = [world.deps.pseudonymizer.keyed_hash(TENANT, v["id"]) for v in victims]
    assert sorted(delete.record_id_hashes) == sorted(hashes)
    with world.engine.connect() as conn:
        assert id_map_store.lookup_id_map(conn, TENANT, "contacts", hashes) == {}


def test_a_us_portal_is_a_recorded_transfer(world: World) -> None:
    world.add_sync(destination_endpoint="na1")
    plan, _, _ = world.run()
    transfers = [e for e in world.events(plan.run_id) if e.kind is EventKind.TRANSFER]
    assert transfers and all(
        (
            e.region_from,
            e.region_to,
            e.subprocessor,
            e.transfer_mechanism.value if e.transfer_mechanism else None,
        )
        == ("eea", "us", "hubspot", "scc")
        for e in transfers
    )
    assert sum(len(e.record_id_hashes) for e in transfers) == CONTACTS


# ---- resuming from heartbeats -----------------------------------------------------------------


class Failing:
    """A connector factory whose connectors fail (TransientError) on the n-th read/write call."""

    def __init__(
        self, inner: Callable[[str], Connector], *, fail_read_at: int = 0, fail_write_at: int = 0
    ) -> None:
        self.inner = inner
        self.fail_read_at, self.fail_write_at = fail_read_at, fail_write_at
        self.reads = self.writes = 0

    def __call__(self, connection_id: str) -> Connector:
        real = self.inner(connection_id)
        outer = self

        class Wrapped(type(real)):  # type: ignore[misc]
            def __init__(self) -> None:
                self.__dict__ = real.__dict__

            def read_page(
                self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]
            ) -> Page:
                outer.reads += 1
                if outer.reads == outer.fail_read_at:
                    raise TransientError("injected: connection dropped")
                return real.read_page(stream, state, page_size, fields)

            def write_batch(
                self, stream: str, records: Sequence[Record], mode: WriteMode, *, external_id: str
            ) -> WriteResult:
                outer.writes += 1
                if outer.writes == outer.fail_write_at:
                    raise TransientError("injected: connection dropped")
                return real.write_batch(stream, records, mode, external_id=external_id)

        return Wrapped()


def test_pull_resumes_from_its_last_heartbeat(world: World) -> None:
    world.add_sync()
    plan = world.plan()
    failing = Failing(world.deps.connector_factory, fail_read_at=3)
    acts = SyncActivities(
        dataclasses.replace(world.deps, connector_factory=failing), page_size=50, part_records=50
    )
    pull = PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=100)
    with pytest.raises(ApplicationError) as caught:
        world.env().run(acts.pull_batch, pull)
    assert caught.value.type == "TransientError" and not caught.value.non_retryable
    # Pages 1 and 2 were staged as parts 0 and 1. Suppose only the first heartbeat reached Temporal.
    first = next(PullProgress.model_validate(h) for h in world.heartbeats if h["parts"] == [0])
    with world.engine.connect() as conn:
        assert staging_store.staged_parts(conn, TENANT, first.batch_id) == [0, 1]
    reads_before = failing.reads
    batch = world.env([first.model_dump(mode="json")]).run(acts.pull_batch, pull)
    # The retry read on from page 2 (part 1 was dropped and read again), not from the start.
    assert failing.reads - reads_before == CONTACTS // 50 + (CONTACTS % 50 > 0) - 1
    assert batch.records == CONTACTS and not batch.has_more
    (pull_event,) = [e for e in world.events(plan.run_id) if e.kind is EventKind.PULL]
    assert len(pull_event.record_id_hashes) == len(set(pull_event.record_id_hashes)) == CONTACTS
    assert len([e for e in world.events(plan.run_id) if e.kind is EventKind.STORE]) == 5
    # A retry after the pull finished (its completion lost) returns the same BatchRef, reading nothing.
    finished = PullProgress.model_validate(world.heartbeats[-1])
    assert finished.finished
    reads_before = failing.reads
    assert world.env([finished.model_dump(mode="json")]).run(acts.pull_batch, pull) == batch
    assert failing.reads == reads_before
    assert len([e for e in world.events(plan.run_id) if e.kind is EventKind.PULL]) == 1
    result = world.env().run(acts.push_batch, PushInput(plan=plan, batch=batch))
    assert result.pushed == CONTACTS == len(world.hubspot_contacts())


def test_push_resumes_after_the_parts_it_wrote(world: World) -> None:
    world.add_sync()
    plan = world.plan()
    batch = world.env().run(
        world.acts.pull_batch, PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=100)
    )
    failing = Failing(world.deps.connector_factory, fail_write_at=3)
    acts = SyncActivities(dataclasses.replace(world.deps, connector_factory=failing), part_records=100)
    with pytest.raises(ApplicationError):
        world.env().run(acts.push_batch, PushInput(plan=plan, batch=batch))
    last = PushProgress.model_validate(world.heartbeats[-1])
    assert last.done_parts == [0, 1] and last.created == 200
    writes_before = failing.writes
    result = world.env([last.model_dump(mode="json")]).run(acts.push_batch, PushInput(plan=plan, batch=batch))
    assert failing.writes - writes_before == 1  # only part 2 was written again
    assert (result.pushed, result.created, result.failed) == (CONTACTS, CONTACTS, 0)
    assert len(world.hubspot_contacts()) == CONTACTS
    (push,) = [e for e in world.events(plan.run_id) if e.kind is EventKind.PUSH]
    assert push.counts["pushed"] == CONTACTS and len(push.record_id_hashes) == CONTACTS
    # A retry whose completion was lost finds the staging gone and answers from the ledger.
    again = world.env().run(acts.push_batch, PushInput(plan=plan, batch=batch))
    assert again == result


def test_a_retry_after_lineage_was_appended_records_nothing_twice(world: World, monkeypatch) -> None:
    """The chaos crash suite found it: a worker killed after a batch's lineage append but before the
    heartbeat saying so made the retry append the batch again (pull.records 12,000 of 10,000)."""
    import workflows.push as push_module

    world.add_sync()
    plan = world.plan()
    pull = PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=100)
    batch = world.env().run(world.acts.pull_batch, pull)
    unfinished = PullProgress.model_validate(world.heartbeats[-2])  # the last one before "finished"
    assert not unfinished.finished and unfinished.parts
    retry = world.env([unfinished.model_dump(mode="json")])
    retry.info = dataclasses.replace(retry.info, attempt=2)
    assert retry.run(world.acts.pull_batch, pull) == batch
    assert len([e for e in world.events(plan.run_id) if e.kind is EventKind.PULL]) == 1

    # Push: the attempt dies after its lineage append, before deleting the staging (simulated by not
    # deleting it) and before its "finished" heartbeat reached Temporal.
    monkeypatch.setattr(push_module, "delete_staging", lambda *_args, **_kw: None)
    first = world.env().run(world.acts.push_batch, PushInput(plan=plan, batch=batch))
    before_finished = PushProgress.model_validate(world.heartbeats[-2])
    assert not before_finished.finished and before_finished.done_parts
    monkeypatch.undo()
    retry_push = world.env([before_finished.model_dump(mode="json")])
    retry_push.info = dataclasses.replace(retry_push.info, attempt=2)
    again = retry_push.run(world.acts.push_batch, PushInput(plan=plan, batch=batch))
    assert (again.pushed, again.failed) == (first.pushed, first.failed)
    assert len([e for e in world.events(plan.run_id) if e.kind is EventKind.PUSH]) == 1
    assert len(world.hubspot_contacts()) == CONTACTS


def test_discard_removes_staged_batches(world: World) -> None:
    world.add_sync()
    plan = world.plan()
    batch = world.env().run(
        world.acts.pull_batch, PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=2)
    )
    second = world.env().run(
        world.acts.pull_batch, PullInput(plan=plan, state=batch.next_state, batch_seq=1, max_pages=1)
    )
    world.env().run(world.acts.discard_batch, PushInput(plan=plan, batch=batch))
    with world.engine.connect() as conn:
        assert staging_store.staged_parts(conn, TENANT, batch.batch_id) == []
        assert staging_store.staged_parts(conn, TENANT, second.batch_id) == [0]
    assert world.env().run(world.acts.discard_run_staging, plan) == 1
    with pytest.raises(ApplicationError) as caught:
        world.env().run(world.acts.push_batch, PushInput(plan=plan, batch=second))
    assert caught.value.type == "DataError" and caught.value.non_retryable


def test_finish_of_a_failed_run_keeps_the_cursor_and_purges_expired_staging(world: World) -> None:
    world.add_sync()
    plan = world.plan()
    batch = world.env().run(
        world.acts.pull_batch, PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=1)
    )
    with world.engine.begin() as conn:
        conn.execute(
            staging_store.staging_batches.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    world.env().run(
        world.acts.finish_run,
        FinishInput(
            plan=plan, final_state=batch.next_state, counts=RunCounts(pulled=batch.records),
            status=SyncStatus.FAILED, message="destination unreachable",
        ),
    )  # fmt: skip
    with world.engine.connect() as conn:
        sync = sync_store.get_sync(conn, TENANT, "contacts")
        run = run_store.get_run(conn, plan.run_id)
        assert staging_store.staged_parts(conn, TENANT, batch.batch_id) == []
    assert sync is not None and sync.cursor is None and sync.status == "failed"
    assert run is not None and run.status == "failed" and run.counts["pulled"] == batch.records
    assert Ledger(world.engine, TENANT).checkpoints()


# ---- helpers ----------------------------------------------------------------------------------


def assert_no_plaintext(world: World, values: Sequence[str]) -> None:
    """No table crmhub writes holds any of ``values`` (e-mail addresses) in plaintext."""
    tables = [
        tenant_store.tenants, instruction_store.instructions, sync_store.syncs, run_store.sync_runs,
        staging_store.staging_batches, dead_letter_store.dead_letters, id_map_store.id_map, lineage_events,
    ]  # fmt: skip
    needles = [v.lower().encode() for v in values]
    with world.engine.connect() as conn:
        for table in tables:
            for row in conn.execute(select(table)):
                blob = repr(tuple(row)).lower().encode()
                for cell in row:
                    if isinstance(cell, bytes | memoryview):
                        blob += bytes(cell).lower()
                assert not any(n in blob for n in needles), f"plaintext record value in {table.name}"


def test_deps_from_settings_builds_what_a_worker_needs(tmp_path: Path, db_url: str) -> None:
    from services.wiring import deps_from_settings

    settings = load_settings(data_dir=tmp_path, database_url=db_url)
    deps = deps_from_settings(settings)
    try:
        assert deps.subprocessors.processor.id == "crmhub"
        assert (tmp_path / settings.governance.signing_key_file).stat().st_mode & 0o077 == 0
        assert isinstance(deps.connector_factory, ConnectionConnectors)
        assert deps.pseudonymizer.keyed_hash(TENANT, "003000000000001").startswith("kh_")
    finally:
        deps.engine.dispose()


def test_connectors_of_one_connection_share_the_portals_pacing(world: World) -> None:
    """Every HubSpot connector the worker builds for one connection keeps one burst window (two
    syncs of one portal in one worker must not overrun it together)."""
    a, b = (cast(HubSpotConnector, world.deps.connector_factory(world.hs)) for _ in range(2))
    try:
        assert a.config.rate_limit_key == b.config.rate_limit_key == world.hs
        assert a.client._portal is b.client._portal
        factory = cast(ConnectionConnectors, world.deps.connector_factory)
        granted = factory.connection(world.hs).scopes  # what decides whether exports may be used
        assert granted and a.config.granted_scopes == tuple(granted)
    finally:
        a.close()
        b.close()


def test_a_refused_and_a_failed_run_each_enqueue_one_throttled_notice(world: World) -> None:
    world.add_sync(mapping={**MAPPING, "MailingCity": "city"})
    for run in ("run-1", "run-2"):  # the same refusal twice: the controller hears it once
        with pytest.raises(ApplicationError):
            world.plan(run_id=run)
    (refusal,) = world.events("run-1")
    world.add_sync("other")
    plan = world.plan("other", run_id="run-3")
    for _ in range(2):  # a failing run, twice within the throttle window
        world.env().run(
            world.acts.finish_run,
            FinishInput(plan=plan, final_state=plan.start_state, counts=RunCounts(failed=2),
                        status=SyncStatus.FAILED, message="destination unreachable"),
        )  # fmt: skip
    notices = [e for e in Ledger(world.engine, TENANT).read_events() if e.kind is EventKind.NOTICE]
    got = [(e.details["notice_kind"], e.details["phase"], e.details["fact_sync_id"]) for e in notices]
    assert got == [("run_refused", "enqueued", "contacts"), ("run_failed", "enqueued", "other")]
    assert notices[0].details["fact_code"] == refusal.details["code"]
    assert (notices[1].details["fact_run_id"], notices[1].details["fact_failed_records"]) == ("run-3", 2)
