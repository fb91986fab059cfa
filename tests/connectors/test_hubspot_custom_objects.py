"""HubSpot custom objects through the connector: a schema created over HTTPS through the sandbox's
schemas API is discovered (streams, aliases, describe with required and unique properties), written
by batch upsert on its unique property, read full (list) and incremental (search), archived, with
the API calls counted; without the schemas scope only the standard objects are offered."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.objects import CUSTOM_SCOPES
from connectors.testing import read_all
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState, WriteMode
from schemas.errors import ConfigError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import SandboxTokens, portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]

PROJECTS = {
    "name": "projects",
    "labels": {"singular": "Project", "plural": "Projects"},
    "primaryDisplayProperty": "project_name",
    "requiredProperties": ["project_name", "project_code"],
    "searchableProperties": ["project_name"],
    "properties": [
        {"name": "project_name", "label": "Project name"},
        {"name": "project_code", "label": "Project code", "hasUniqueValue": True},
        {"name": "budget", "label": "Budget", "type": "number", "fieldType": "number"},
        {
            "name": "phase",
            "label": "Phase",
            "type": "enumeration",
            "fieldType": "select",
            "options": [{"label": "Plan", "value": "plan"}, {"label": "Build", "value": "build"}],
        },
    ],
}


def create_schema(served: Served, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    """``POST /crm/v3/schemas`` over HTTPS, as an integrator would define the object."""
    with httpx.Client(verify=served.ca.client_context()) as http:
        return http.post(
            f"{served.srv.url}/crm/v3/schemas",
            json=body,
            headers={"Authorization": f"Bearer {token or served.token}"},
        )


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 3})


@pytest.fixture
def type_id(served: Served) -> str:
    answer = create_schema(served, PROJECTS)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["objectTypeId"])


def _full_scopes(hs: Any) -> SandboxTokens:
    return SandboxTokens(hs, scope=" ".join(("crm.objects.contacts.read", *CUSTOM_SCOPES)))


def test_the_schemas_api_answers_as_documented(served: Served, type_id: str) -> None:
    schema = create_schema(served, {**PROJECTS, "name": "projects"})
    assert schema.status_code == 409 and schema.json()["category"] == "CONFLICT"
    bad = create_schema(served, {**PROJECTS, "name": "tasks", "requiredProperties": ["nope"]})
    assert bad.status_code == 400 and "nope" in bad.json()["message"]
    with httpx.Client(verify=served.ca.client_context()) as http:
        auth = {"Authorization": f"Bearer {served.token}"}
        listed = http.get(f"{served.srv.url}/crm/v3/schemas", headers=auth).json()["results"]
        fqn = f"p{served.hs.portal_id}_projects"
        one = http.get(f"{served.srv.url}/crm/v3/schemas/{fqn}", headers=auth).json()
        unknown = http.get(f"{served.srv.url}/crm/v3/objects/projects", headers=auth)
    assert [s["objectTypeId"] for s in listed] == [type_id] and type_id.startswith("2-")
    assert one["fullyQualifiedName"] == fqn and one["requiredProperties"] == ["project_name", "project_code"]
    assert {"hs_object_id", "hs_createdate", "hs_lastmodifieddate", "project_code"} <= {
        p["name"] for p in one["properties"]
    }
    # Records are reached by objectTypeId or fullyQualifiedName, not by the bare name.
    assert unknown.status_code == 400 and "Unable to infer object type" in unknown.json()["message"]


def test_a_custom_object_is_discovered_and_described(served: Served, type_id: str, connect: Connect) -> None:
    conn = connect(served, _full_scopes(served.hs), granted_scopes=CUSTOM_SCOPES)
    calls = conn.client.calls
    streams = {s.name: s for s in conn.streams()}
    assert conn.client.calls - calls == 1  # one schemas call lists every custom object
    assert set(streams) == {"contacts", "companies", "deals", "projects", "deals/contacts"}
    assert not streams["deals/contacts"].writable  # the association stream: read as pairs only
    projects = streams["projects"]
    assert projects.custom and projects.default_external_id == "project_code"
    assert projects.aliases == (type_id, f"p{served.hs.portal_id}_projects")
    assert projects.cursor_field == "hs_lastmodifieddate" and not streams["contacts"].custom
    by_id = conn.describe(type_id)  # the objectTypeId resolves to the same stream
    schema = conn.describe("projects")
    assert by_id == schema and schema.stream == "projects"
    fields = {f.name: f for f in schema.fields}
    assert fields["project_code"].unique and fields["project_code"].external_id
    assert {n for n, f in fields.items() if f.required} == {"project_name", "project_code"}
    assert not fields["hs_lastmodifieddate"].writable and fields["budget"].type == "number"
    with pytest.raises(ConfigError, match="projects"):
        conn.describe("project")


def test_custom_records_round_trip_with_counted_calls(served: Served, type_id: str, connect: Connect) -> None:
    conn = connect(served, _full_scopes(served.hs), granted_scopes=CUSTOM_SCOPES)
    assert "projects" in {s.name for s in conn.streams()}  # discovery: the one schemas call
    n = 250
    records = [
        {"project_code": f"P-{i:04d}", "project_name": f"Project {i}", "budget": i * 10, "phase": "plan"}
        for i in range(n)
    ]
    calls = conn.client.calls
    result = conn.write_batch("projects", records, WriteMode.UPSERT, external_id="project_code")
    assert not result.failed and len(result.outcomes) == n
    assert conn.client.calls - calls == math.ceil(n / 100)  # batch/upsert calls of 100
    stored = {r["project_code"]: r for r in served.hs.live_records("projects")}
    assert len(stored) == n and stored["P-0007"]["budget"] == "70"

    calls = conn.client.calls
    full = read_all(conn, "projects", StreamState(), page_size=100, fields=["project_code", "budget"])
    assert len(full.records) == n and {r["project_code"] for r in full.records} == set(stored)
    assert conn.client.calls - calls == math.ceil(n / 100)  # list pages of 100

    again = conn.write_batch("projects", records[:5], WriteMode.UPSERT, external_id="project_code")
    assert [o.status.value for o in again.outcomes] == ["updated"] * 5  # idempotent by project_code
    served.hs.update_record("projects", stored["P-0003"]["id"], {"phase": "build"})
    state = full.states[-1].model_copy(update={"mode": ReadMode.INCREMENTAL})
    calls = conn.client.calls
    inc = read_all(conn, type_id, state, page_size=100, fields=["phase"])
    changed = {r["id"]: r for r in inc.records}
    assert changed[stored["P-0003"]["id"]]["phase"] == "build" and len(changed) == 5
    assert conn.client.calls - calls == 2  # one search page + one archived-list page

    ids = [stored[f"P-{i:04d}"]["id"] for i in range(3)]
    calls = conn.client.calls
    gone = conn.write_batch(
        "projects", [{"id": i} for i in ids], WriteMode.DELETE, external_id="project_code"
    )
    assert not gone.failed and conn.client.calls - calls == 1  # one batch/archive
    assert len(served.hs.live_records("projects")) == n - 3


def test_without_the_schemas_scope_only_standard_objects(
    served: Served, type_id: str, connect: Connect
) -> None:
    narrow = connect(served, SandboxTokens(served.hs), granted_scopes=("crm.objects.contacts.read",))
    calls = narrow.client.calls
    standard = ["contacts", "companies", "deals", "deals/contacts"]  # (and the association stream)
    assert [s.name for s in narrow.streams()] == standard
    assert narrow.client.calls == calls  # not even asked
    unknown = connect(served, SandboxTokens(served.hs))  # scopes unknown: asked, refused (403)
    assert [s.name for s in unknown.streams()] == standard
    with pytest.raises(ConfigError, match="unknown HubSpot stream"):
        unknown.read_page("projects", StreamState(), 10, ["project_code"])


def test_custom_records_need_the_custom_object_scopes(served: Served, type_id: str) -> None:
    narrow = SandboxTokens(served.hs, scope="crm.objects.contacts.read").access_token()
    reader = SandboxTokens(served.hs, scope="crm.objects.custom.read").access_token()
    with httpx.Client(verify=served.ca.client_context()) as http:

        def call(token: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return http.request(
                method, f"{served.srv.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
            )

        schemas = call(narrow, "GET", "/crm/v3/schemas")
        listed = call(narrow, "GET", f"/crm/v3/objects/{type_id}")
        read = call(reader, "GET", f"/crm/v3/objects/{type_id}")
        write = call(reader, "POST", f"/crm/v3/objects/{type_id}/batch/upsert", {"inputs": []})
    assert schemas.status_code == 403 and schemas.json()["category"] == "MISSING_SCOPES"
    assert listed.status_code == 403 and read.status_code == 200 and write.status_code == 403
    assert write.json()["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.custom.write"]


def test_a_record_without_a_required_property_is_refused_with_the_vendor_code(
    served: Served, type_id: str, connect: Connect
) -> None:
    """The schema's ``requiredProperties`` hold on create: HubSpot fails the whole batch (400
    "Property values were not valid", one problem per record and property: the sandbox's guess of
    the shape) and the writer isolates the records without a value in one resend; an update does
    not need them."""
    with httpx.Client(verify=served.ca.client_context()) as http:
        answer = http.post(
            f"{served.srv.url}/crm/v3/objects/{type_id}/batch/create",
            json={"inputs": [{"properties": {"project_code": "X-1"}}]},
            headers={"Authorization": f"Bearer {served.token}"},
        )
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"
    assert '"error":"REQUIRED_PROPERTY_MISSING","name":"project_name"' in answer.json()["message"]
    conn = connect(served, _full_scopes(served.hs), granted_scopes=CUSTOM_SCOPES)
    conn.streams()
    records: list[dict[str, Any]] = [
        {"project_code": f"P-{i:02d}", "project_name": None if i % 4 == 0 else f"Project {i}"}
        for i in range(20)
    ]
    calls = conn.client.calls
    result = conn.write_batch("projects", records, WriteMode.UPSERT, external_id="project_code")
    refused = {o.index: o.error_code for o in result.outcomes if not o.ok}
    assert refused == {i: "REQUIRED_PROPERTY_MISSING" for i in range(0, 20, 4)}
    assert conn.client.calls - calls == 2  # the rejected batch + the resend of the 15 others
    stored = {r["project_code"] for r in served.hs.live_records("projects")}
    assert stored == {f"P-{i:02d}" for i in range(20) if i % 4}
    update = conn.write_batch(  # an existing record: no required property needed
        "projects", [{"project_code": "P-01", "budget": 5}], WriteMode.UPSERT, external_id="project_code"
    )
    assert [o.status.value for o in update.outcomes] == ["updated"]
