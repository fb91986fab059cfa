"""Dates into a Salesforce destination by its described field types (:mod:`connectors.values`),
through the real Salesforce connector over HTTPS: a HubSpot epoch-ms string or ISO datetime becomes
a Date ``YYYY-MM-DD``; one call per batch, no record refused for its date."""

from __future__ import annotations

import uuid

import pytest

from schemas.connector import WriteMode
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration


def test_hubspot_shaped_dates_are_written_as_the_described_salesforce_date(org: Org) -> None:
    conn = org.connector()
    conn.describe("Contact")  # the types the writer converts by (cached: no call of its own)
    shapes = [
        "1714521600000",
        "1714571100000",
        "2024-05-01T13:45:00Z",
        "2024-05-01T13:45:00.000Z",
        "2024-05-01",
    ]
    tags = [uuid.uuid4().hex[:12] for _ in shapes]
    batch = [{**required("Contact", t), "Birthdate": s} for t, s in zip(tags, shapes, strict=True)]
    res = conn.write_batch("Contact", batch, WriteMode.UPSERT, external_id="External_Id__c")
    assert not res.failed, [(o.error_code, o.error_message) for o in res.failed]
    assert res.calls == 1
    stored = {r.data.get("External_Id__c"): r.data.get("Birthdate") for r in org.sb.store.dump("Contact")}
    assert {stored[f"T-{t}"] for t in tags} == {"2024-05-01"}
