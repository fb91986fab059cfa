"""The sandbox control API's schema changes (``POST /__sandbox/schema/{obj}``) behave as each vendor
does: Salesforce converts stored values on a retype and keeps them under a renamed API name;
HubSpot leaves stored strings as they are and "renames" by a new property plus an archived one."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from sandbox.base import VendorSandbox
from sandbox.hubspot.app import HubSpotSandbox
from sandbox.salesforce.app import SalesforceSandbox
from sandbox.salesforce.describe import convert_value


def _post(sb: VendorSandbox, obj: str, token: str | None = None, **change: Any) -> Any:
    with TestClient(sb.app()) as client:
        return client.post(
            f"/__sandbox/schema/{obj}",
            json=change,
            headers={"Authorization": f"Bearer {token or sb.control_token}"},
        )


def test_salesforce_conversions_follow_the_vendor() -> None:
    assert convert_value("double", "string", 12.0) == "12"
    assert convert_value("double", "string", 12.5) == "12.5"
    assert convert_value("string", "double", "13") == 13.0
    assert convert_value("string", "double", "thirteen") is None  # not a number: lost
    assert convert_value("date", "string", "2024-01-01") is None  # incompatible: set to null
    assert convert_value("string", "date", "2024-01-01") is None
    assert convert_value("boolean", "string", True) is None
    assert convert_value("string", "textarea", "kept") == "kept"


def test_salesforce_retype_rename_add_drop() -> None:
    sf = SalesforceSandbox()
    sf.seed({"Account": 2, "Contact": 5})
    before = {r["id"]: r for r in sf.live_records("Contact")}
    r = _post(sf, "Contact", change="retype", field="Lead_Score__c", type="string")
    assert r.status_code == 200 and r.json()["records"] == 5
    after = {r["id"]: r for r in sf.live_records("Contact")}
    for rid, rec in before.items():
        assert after[rid]["Lead_Score__c"] == str(int(rec["Lead_Score__c"]))
    fields = {f["name"]: f for f in sf.schema.fields("Contact")}
    assert fields["Lead_Score__c"]["type"] == "string"

    assert _post(sf, "Contact", change="rename", field="Title", to="Job_Title__c").status_code == 200
    renamed = {r["id"]: r for r in sf.live_records("Contact")}
    for rid, rec in before.items():
        assert renamed[rid].get("Job_Title__c") == rec.get("Title") and "Title" not in renamed[rid]
    assert _post(sf, "Contact", change="add", field="Shoe_Size__c", type="double").status_code == 200
    assert _post(sf, "Contact", change="drop", field="Phone").status_code == 200
    names = {f["name"] for f in sf.schema.fields("Contact")}
    assert {"Job_Title__c", "Shoe_Size__c"} <= names and not {"Title", "Phone"} & names
    assert _post(sf, "Contact", change="drop", field="Nope__c").status_code == 409
    assert _post(sf, "Contact", token="wrong", change="drop", field="Email").status_code == 401
    assert _post(sf, "Contact", change="explode", field="Email").status_code == 400


def test_hubspot_retype_keeps_strings_and_rename_is_new_plus_archived() -> None:
    hs = HubSpotSandbox()
    hs.seed({"contacts": 3})
    before = {r["id"]: r for r in hs.live_records("contacts")}
    assert _post(hs, "contacts", change="retype", field="lead_score", type="string").status_code == 200
    retyped = hs.properties.get("contacts", "lead_score")
    assert retyped is not None and retyped.type == "string"
    assert {r["id"]: r.get("lead_score") for r in hs.live_records("contacts")} == {
        rid: r.get("lead_score") for rid, r in before.items()
    }
    r = _post(hs, "contacts", change="rename", field="jobtitle", to="job_title")
    assert r.json() == {"added": "job_title", "dropped": "jobtitle"}
    assert hs.properties.get("contacts", "job_title") is not None
    assert hs.properties.get("contacts", "jobtitle") is None
    assert hs.properties.get("contacts", "jobtitle", include_archived=True) is not None
    assert _post(hs, "contacts", change="add", field="lead_score", type="number").status_code == 409
