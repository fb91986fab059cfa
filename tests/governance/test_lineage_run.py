"""RunRef: one run's citation, and the events it makes are the ones activities build by hand today."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from governance.lineage import RunRef
from governance.registry import Registry, load_registry, transfer_event
from schemas.errors import PolicyError
from schemas.lineage import DatasetRef, EventKind, LineageEvent, TransferMechanism
from tests.governance.policy.support import instruction

AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SOURCE = DatasetRef(namespace="salesforce://eu.example", name="Contact")
STAGING = DatasetRef(namespace="crmhub://staging", name="contacts")
HASHES = tuple(hmac.new(b"k", f"003{i}".encode(), hashlib.sha256).hexdigest() for i in range(3))
REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "subprocessors.yaml"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REGISTRY)


def test_of_cites_the_instruction() -> None:
    ins = instruction()
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=ins)
    assert (run.tenant, run.run_id, run.sync_id) == ("acme", "run-1", "contacts")
    assert (run.instruction_version, run.instruction_hash, run.purpose) == (3, ins.content_hash, "crm_sync")
    assert RunRef.of("acme", "run-1", sync_id="contacts", instruction=ins, purpose="crm_sync") == run


def test_a_run_without_instruction_names_its_purpose() -> None:
    run = RunRef.of("acme", "dsr:r1", purpose="dsr")
    assert run == RunRef(tenant="acme", run_id="dsr:r1", purpose="dsr")
    assert (run.sync_id, run.instruction_version, run.instruction_hash) == (None, None, None)


def test_of_refuses_another_tenants_instruction_or_purpose() -> None:
    with pytest.raises(PolicyError) as info:
        RunRef.of("globex", "run-1", instruction=instruction())
    assert info.value.code == "run_instruction_tenant"
    with pytest.raises(PolicyError) as info:
        RunRef.of("acme", "run-1", instruction=instruction(), purpose="marketing")
    assert info.value.code == "run_instruction_purpose"


def test_event_is_the_one_built_by_hand() -> None:
    ins = instruction()
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=ins)
    made = run.event(
        EventKind.PULL,
        at=AT,
        source=SOURCE,
        destination=STAGING,
        counts={"records": 3},
        record_id_hashes=list(HASHES),
        subprocessor="salesforce",
        region_from="eea",
        region_to="eea",
        details={"batch_id": "b1"},
    )
    by_hand = LineageEvent(
        kind=EventKind.PULL,
        tenant="acme",
        run_id="run-1",
        sync_id="contacts",
        instruction_version=ins.version,
        instruction_hash=ins.content_hash,
        purpose=ins.purpose,
        timestamp=AT,
        source=SOURCE,
        destination=STAGING,
        counts={"records": 3},
        record_id_hashes=HASHES,
        subprocessor="salesforce",
        region_from="eea",
        region_to="eea",
        details={"batch_id": "b1"},
    )
    assert made == by_hand
    assert made.canonical_bytes() == by_hand.canonical_bytes()


def test_event_refuses_raw_ids_and_naive_times_without_echoing() -> None:
    run = RunRef(tenant="acme", run_id="run-1")
    with pytest.raises(ValidationError) as info:
        run.event(EventKind.PULL, at=AT, record_id_hashes=["alice@example.com"])
    assert "alice" not in str(info.value)
    with pytest.raises(ValidationError):
        run.event(EventKind.PULL, at=datetime(2025, 6, 1))
    with pytest.raises(ValidationError):
        run.event(EventKind.PULL, at=AT, counts={"records": -1})


def test_run_ref_is_frozen_and_crosses_json() -> None:
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=instruction())
    with pytest.raises(ValidationError, match="frozen"):
        run.run_id = "run-2"  # type: ignore[misc]
    assert RunRef.model_validate_json(run.model_dump_json()) == run
    with pytest.raises(ValidationError):
        RunRef(tenant="", run_id="run-1")


def test_transfer_event_counts_and_keyword_form() -> None:
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=instruction())
    event = run.transfer(
        TransferMechanism.SCC,
        at=AT,
        subprocessor="hubspot",
        region_from="eea",
        region_to="us",
        record_id_hashes=HASHES,
        source=STAGING,
        destination=SOURCE,
    )
    assert event.kind is EventKind.TRANSFER
    assert (event.region_from, event.region_to, event.transfer_mechanism) == (
        "eea",
        "us",
        TransferMechanism.SCC,
    )
    assert event.counts == {"records": 3}
    assert event.record_id_hashes == HASHES
    assert (event.run_id, event.instruction_hash) == (run.run_id, run.instruction_hash)
    counted = run.transfer(
        TransferMechanism.SCC,
        at=AT,
        subprocessor="hubspot",
        region_from="eea",
        region_to="us",
        counts={"x": 1},
    )
    assert counted.counts == {"x": 1}
    keyword = transfer_event(
        tenant="acme",
        run_id="run-1",
        sync_id="contacts",
        purpose=run.purpose,
        instruction_version=run.instruction_version,
        instruction_hash=run.instruction_hash,
        subprocessor="hubspot",
        region_from="eea",
        region_to="us",
        mechanism=TransferMechanism.SCC,
        record_id_hashes=HASHES,
        source=STAGING,
        destination=SOURCE,
        timestamp=AT,
    )
    assert keyword == event


def test_registry_transfer_for_a_run(registry: Registry) -> None:
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=instruction())
    event = registry.transfer_for(
        run, from_region="eea", to_region="us", subprocessor="hubspot", at=AT, record_id_hashes=HASHES
    )
    assert event is not None
    assert event.transfer_mechanism is TransferMechanism.SCC
    assert event == registry.transfer(
        tenant="acme",
        run_id="run-1",
        sync_id="contacts",
        purpose=run.purpose,
        instruction_version=run.instruction_version,
        instruction_hash=run.instruction_hash,
        from_region="eea",
        to_region="us",
        subprocessor="hubspot",
        record_id_hashes=HASHES,
        timestamp=AT,
    )
    assert (
        registry.transfer_for(run, from_region="eea", to_region="eea", subprocessor="hubspot", at=AT) is None
    )
