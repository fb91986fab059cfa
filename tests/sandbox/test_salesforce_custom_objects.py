"""Salesforce custom objects in the sandbox org, through simple-salesforce over HTTPS: the global
describe lists ``Project__c`` with ``custom: true`` and its own key prefix, its describe carries the
standard fields plus its ``__c`` fields, and records are upserted by its external id, queried and
deleted through sObject Collections (ids found by their key prefix)."""

from __future__ import annotations

import pytest

from tests.sandbox import salesforce_support
from tests.sandbox.salesforce_support import Org

sf_ca = salesforce_support.sf_ca
org = salesforce_support.org

FIELDS = [
    {"name": "Code__c", "type": "string", "label": "Code", "length": 32, "external_id": True, "unique": True},
    {"name": "Budget__c", "type": "double", "label": "Budget", "precision": 18, "scale": 0},
]


def test_a_custom_object_is_described_and_written_like_a_standard_one(org: Org) -> None:
    prefix = org.sb.add_custom_object("Project__c", "Project", "Projects", FIELDS)
    assert prefix == "a01"
    sf = org.client()
    listed = {o["name"]: o for o in sf.describe()["sobjects"]}
    assert listed["Project__c"]["custom"] and not listed["Contact"]["custom"]
    assert listed["Project__c"]["keyPrefix"] == "a01" and listed["Project__c"]["labelPlural"] == "Projects"
    described = sf.Project__c.describe()
    names = [f["name"] for f in described["fields"]]
    assert names[:3] == ["Id", "IsDeleted", "Name"] and {"Code__c", "Budget__c", "SystemModstamp"} <= set(
        names
    )
    code = next(f for f in described["fields"] if f["name"] == "Code__c")
    assert code["custom"] and code["externalId"] and code["unique"]

    created = sf.Project__c.upsert("Code__c/P-1", {"Name": "Alpha", "Budget__c": 10})
    assert created == 201
    assert sf.Project__c.upsert("Code__c/P-1", {"Budget__c": 11}) == 200  # matched by Code__c: updated
    rows = sf.query("SELECT Id, Name, Budget__c FROM Project__c WHERE Code__c = 'P-1'")["records"]
    assert len(rows) == 1 and rows[0]["Name"] == "Alpha" and rows[0]["Budget__c"] == 11
    assert rows[0]["Id"].startswith("a01")
    gone = sf.restful(f"composite/sobjects?ids={rows[0]['Id']}", method="DELETE")
    assert gone == [{"id": rows[0]["Id"], "success": True, "errors": []}]
    assert org.sb.live_records("Project__c") == []
    with pytest.raises(ValueError, match="__c"):
        org.sb.add_custom_object("Project", "Project", "Projects", FIELDS)
