"""``read_by_ids`` of both connectors against the sandboxes over real HTTPS: the records asked for
in the shape ``read_page`` gives, deleted ids reported missing, and the vendor calls at the batch
minimum (Salesforce ≤ 200 ids a query within the REST URI limit; HubSpot 100 ids a batch/read)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.salesforce import byids
from connectors.salesforce.byids import MAX_IDS, URI_BUDGET, id_chunks
from connectors.salesforce.schema import plan_fields
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError, DataError
from tests.connectors import hubspot_harness, salesforce_harness
from tests.connectors.hubspot_harness import portal
from tests.connectors.salesforce_harness import Org
from tests.sandbox.hubspot_support import Served

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org
hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect

pytestmark = pytest.mark.integration


# -- Salesforce ----------------------------------------------------------------------------------


def test_salesforce_reads_250_contacts_by_id_in_two_queries_and_reports_the_deleted_missing(org: Org) -> None:
    conn = org.connector()
    ids = sorted(r.id for r in org.sb.store.dump("Contact", include_deleted=False))[:250]
    gone = ids[7]
    assert org.sb.delete_record("Contact", gone)
    org.sb.calls.clear()
    got = conn.read_by_ids("Contact", [*ids, ids[0]], ["FirstName", "LastName", "Email"])
    assert sorted(r["Id"] for r in got.records) == sorted(set(ids) - {gone})
    assert got.missing == [gone]
    # One describe (the connector's first, then cached) and ceil(250 / 200) queries.
    assert got.calls == 1 + math.ceil(250 / MAX_IDS) == sum(org.sb.calls.counts().values())
    assert org.sb.calls.counts()["sf.query"] == 2
    assert conn.read_by_ids("Contact", ids, ["FirstName", "LastName", "Email"]).calls == 2
    # The shape read_page gives: the fields asked for, Id and SystemModstamp.
    asked = ["FirstName", "LastName", "Email"]
    page = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 2000, asked)
    listed = {r["Id"]: r for r in page.records}
    for rec in got.records:
        assert rec == listed[rec["Id"]]
    assert conn.read_by_ids("Contact", [], ["Email"]).calls == 0


def test_salesforce_id_chunks_respect_the_uri_limit_and_the_sandbox_refuses_a_longer_query(org: Org) -> None:
    conn = org.connector()
    plan = plan_fields(conn._fields("Contact"), ["FirstName", "LastName", "Email"], with_deleted=False)
    ids = [f"003{n:015d}" for n in range(1000)]
    chunks = id_chunks("Contact", plan, ids)
    assert [i for c in chunks for i in c] == ids
    assert all(len(c) <= MAX_IDS for c in chunks) and len(chunks) == 5
    # 600 ids in one query would be ~16.8 kB of URI: the sandbox answers 414 as Salesforce does.
    long = byids._soql("Contact", plan, ids[:600])
    with pytest.raises(DataError):
        conn._client.query(long, include_deleted=False, batch_size=200, what="too long")
    assert org.sb.calls.all()[-1].status == 414
    assert URI_BUDGET < 16_384
    with pytest.raises(ConfigError):
        conn.read_by_ids("Contact", ["x' OR Name != '"], ["Email"])


# -- HubSpot -------------------------------------------------------------------------------------


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 250})


def test_hubspot_reads_250_contacts_by_id_in_three_batch_reads_and_reports_the_archived_missing(
    served: Served, connect: Callable[..., HubSpotConnector]
) -> None:
    conn = connect(served)
    ids = sorted((r.id for r in served.hs.store.dump("contacts", include_deleted=False)), key=int)
    gone = ids[3]
    assert served.hs.delete_record("contacts", gone)
    served.hs.calls.clear()
    got = conn.read_by_ids("contacts", ids, ["email", "firstname", "lastname"])
    assert sorted(r["id"] for r in got.records) == sorted(set(ids) - {gone})
    assert got.missing == [gone]
    assert got.calls == 3 == math.ceil(250 / 100)
    assert [c.endpoint for c in served.hs.calls.all()] == ["hs.batch.read.contacts"] * 3
    # The shape read_page gives: the properties asked for plus hs_object_id, lastmodifieddate and id.
    asked = ["email", "firstname", "lastname"]
    page = conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 100, asked)
    listed = {r["id"]: r for r in page.records}
    for rec in got.records:
        if rec["id"] in listed:
            assert rec == listed[rec["id"]]
    assert conn.read_by_ids("contacts", [], ["email"]).calls == 0
    with pytest.raises(ConfigError):
        conn.read_by_ids("contacts", ["1 OR 1"], ["email"])
