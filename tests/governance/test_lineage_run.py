"""RunRef: one run's citation, and the events it makes are the ones activities build by hand today."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Unpack

import pytest
from pydantic import ValidationError

from governance.lineage import EventFields, MoveFields, RunRef
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
    step: EventFields = {
        "source": SOURCE,
        "destination": STAGING,
        "counts": {"records": 3},
        "record_id_hashes": HASHES,
        "subprocessor": "salesforce",
        "region_from": "eea",
        "region_to": "eea",
        "details": {"batch_id": "b1"},
    }
    made = run.event(EventKind.PULL, at=AT, **step)
    # What ActivityKit.event and the DSR/maintenance activities write out today.
    by_hand = LineageEvent.model_validate(
        {
            "kind": EventKind.PULL,
            "tenant": "acme",
            "run_id": "run-1",
            "sync_id": "contacts",
            "instruction_version": ins.version,
            "instruction_hash": ins.content_hash,
            "purpose": ins.purpose,
            "timestamp": AT,
            **step,
        }
    )
    assert made == by_hand
    assert made.canonical_bytes() == by_hand.canonical_bytes()
    listed: EventFields = {**step, "record_id_hashes": list(HASHES)}
    assert run.event(EventKind.PULL, at=AT, **listed) == made


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


def _scc(run: RunRef, **move: Unpack[MoveFields]) -> LineageEvent:
    return run.transfer(
        TransferMechanism.SCC, at=AT, subprocessor="hubspot", region_from="eea", region_to="us", **move
    )


def test_transfer_event_counts_and_keyword_form() -> None:
    run = RunRef.of("acme", "run-1", sync_id="contacts", instruction=instruction())
    event = _scc(run, record_id_hashes=HASHES, source=STAGING, destination=SOURCE)
    assert event.kind is EventKind.TRANSFER
    assert event.transfer_mechanism is TransferMechanism.SCC
    assert (event.region_from, event.region_to, event.subprocessor) == ("eea", "us", "hubspot")
    assert event.counts == {"records": 3}
    assert event.record_id_hashes == HASHES
    assert (event.run_id, event.instruction_hash) == (run.run_id, run.instruction_hash)
    assert _scc(run, counts={"x": 1}).counts == {"x": 1}
    # The keyword form cites the run field by field: the same event.
    keyword = transfer_event(
        **run.model_dump(),
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
    keyword = registry.transfer(
        **run.model_dump(),
        from_region="eea",
        to_region="us",
        subprocessor="hubspot",
        record_id_hashes=HASHES,
        timestamp=AT,
    )
    assert keyword == event
    assert (
        registry.transfer_for(run, from_region="eea", to_region="eea", subprocessor="hubspot", at=AT) is None
    )
