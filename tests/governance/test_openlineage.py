"""OpenLineage export: START/COMPLETE/FAIL per run, crmhub custom facets, spec-valid structure.

openlineage-python 1.54 ships no JSON schema file (checked: no *.json in the package) and the
environment has no JSON-schema validator, so the required structure of spec 2-0-2
(``OpenLineage.json#/$defs/RunEvent``) is validated explicitly below.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openlineage.client
from openlineage.client.event_v2 import RunState

from governance.openlineage import FACET_SCHEMA_BASE, PRODUCER, run_events, run_events_json
from governance.registry import transfer_event
from schemas.lineage import EventKind, LineageEvent, TransferMechanism
from tests.governance.test_lineage import T0, make_event

RUN_STATES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}


def _uri(value: Any) -> None:
    assert isinstance(value, str)
    parsed = urlparse(value)
    assert parsed.scheme and parsed.netloc, value


def _facets(facets: Any, *, custom_prefix: str | None = None) -> None:
    assert isinstance(facets, dict)
    for key, facet in facets.items():
        assert isinstance(facet, dict)
        _uri(facet["_producer"])
        _uri(facet["_schemaURL"])
        if not facet["_schemaURL"].startswith("https://openlineage.io/"):
            # Custom facets: prefixed key, schema URL with a #/$defs/<Name>RunFacet fragment.
            assert custom_prefix and key.startswith(custom_prefix), key
            assert re.search(r"#/\$defs/\w+RunFacet$", facet["_schemaURL"]), facet["_schemaURL"]


def _dataset(ds: Any) -> None:
    assert isinstance(ds["namespace"], str) and ds["namespace"]
    assert isinstance(ds["name"], str) and ds["name"]
    _facets(ds.get("facets", {}))


def validate_run_event(event: dict[str, Any]) -> None:
    """Required structure of an OpenLineage 2-0-2 RunEvent."""
    for key in ("eventTime", "producer", "schemaURL", "run", "job"):
        assert key in event, key
    datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
    assert "T" in event["eventTime"]
    _uri(event["producer"])
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent")
    assert event["eventType"] in RUN_STATES
    uuid.UUID(event["run"]["runId"])
    _facets(event["run"].get("facets", {}), custom_prefix="crmhub_")
    assert isinstance(event["job"]["namespace"], str) and event["job"]["namespace"]
    assert isinstance(event["job"]["name"], str) and event["job"]["name"]
    _facets(event["job"].get("facets", {}))
    for ds in [*event.get("inputs", []), *event.get("outputs", [])]:
        _dataset(ds)
    json.dumps(event)  # serializable as is


def test_package_ships_no_schema_so_structure_is_checked_explicitly() -> None:
    package = Path(openlineage.client.__file__).parent
    assert not list(package.rglob("*.json"))


def _run(run_id: str, *, refusal: bool = False) -> list[LineageEvent]:
    events = [make_event(i, run=run_id) for i in range(3)]
    events.append(
        transfer_event(
            tenant="acme",
            run_id=run_id,
            subprocessor="salesforce",
            region_from="eea",
            region_to="us",
            mechanism=TransferMechanism.ADEQUACY,
            record_id_hashes=("12" * 32, "34" * 32),
            timestamp=T0.replace(minute=5),
        )
    )
    if refusal:
        events.append(
            LineageEvent(
                kind=EventKind.REFUSAL,
                tenant="acme",
                run_id=run_id,
                purpose="crm-sync",
                details={"reason": "field Phone is not allowed"},
                timestamp=T0.replace(minute=6),
            )
        )
    return events


def test_each_run_gets_start_and_complete_with_custom_facets() -> None:
    payload = run_events_json(_run("run-a") + _run("run-b", refusal=True))
    assert [e["eventType"] for e in payload] == ["START", "COMPLETE", "START", "FAIL"]
    for event in payload:
        validate_run_event(event)
    start, complete = payload[0], payload[1]
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert start["eventTime"] == "2025-01-01T00:00:00.000000Z"
    assert complete["eventTime"] == "2025-01-01T00:05:00.000000Z"
    assert start["producer"] == PRODUCER
    facets = complete["run"]["facets"]
    assert set(facets) == {"crmhub_purpose", "crmhub_processor", "crmhub_subprocessor", "crmhub_transfer"}
    assert facets["crmhub_purpose"]["purpose"] == "crm-sync"
    assert facets["crmhub_purpose"]["instructionVersion"] == 3
    assert facets["crmhub_processor"]["role"] == "processor"
    assert facets["crmhub_processor"]["controller"] == "acme"
    assert facets["crmhub_subprocessor"]["subprocessors"] == ["salesforce"]
    assert facets["crmhub_transfer"]["transfers"] == [
        {
            "regionFrom": "eea",
            "regionTo": "us",
            "mechanism": "adequacy",
            "subprocessor": "salesforce",
            "records": 2,
            "eventTime": "2025-01-01T00:05:00.000000Z",
        }
    ]
    assert facets["crmhub_purpose"]["_schemaURL"].startswith(FACET_SCHEMA_BASE)
    assert complete["job"] == {"namespace": "crmhub/acme", "name": "sync:acme:contacts", "facets": {}}
    assert [d["name"] for d in complete["inputs"]] == ["Contact"]
    assert [d["name"] for d in complete["outputs"]] == ["contacts"]
    fail = payload[3]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "refusal: field Phone is not allowed"


def test_no_record_hashes_leave_in_the_export() -> None:
    events = _run("run-a")
    text = json.dumps(run_events_json(events))
    for event in events:
        for h in event.record_id_hashes:
            assert h not in text


def test_run_ids_are_stable_uuids_and_outcomes_can_be_overridden() -> None:
    temporal_run = str(uuid.uuid4())
    first = run_events(_run(temporal_run), outcomes={temporal_run: RunState.ABORT})
    assert first[0].run.runId == temporal_run
    assert first[1].eventType is RunState.ABORT
    a = run_events(_run("not-a-uuid"))[0].run.runId
    assert a == run_events(_run("not-a-uuid"))[0].run.runId
    assert a != run_events(_run("another"))[0].run.runId
