"""Deletes that never appear as deletes in HubSpot, through the real connector: merges (the losers
just stop existing; the result carries their ids) and GDPR deletes (gone from the live and the
archived list; only an id reconciliation finds them). The merge/GDPR calls go through
hubspot-api-client's own ``merge``/``purge``, as a portal user's app would make them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import pytest
from hubspot.crm.contacts import PublicGdprDeleteInput, PublicMergeInput

from connectors.base import Connector
from connectors.hubspot import HubSpotConnector
from connectors.testing import read_all
from sandbox.hubspot import HubSpotSandbox
from sandbox.tls import SandboxCA
from schemas.connector import Page, StreamState
from schemas.errors import ConfigError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
FIELDS = ["email", "firstname"]


@pytest.fixture
def small(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 250})


def _started(served: Served, conn: HubSpotConnector) -> tuple[HubSpotSandbox, HubSpotConnector, StreamState]:
    """The portal, the connector, and the state after a first complete read."""
    start = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS).final_state
    return served.hs, conn, start


def _incremental(
    served: Served, conn: HubSpotConnector, state: StreamState
) -> tuple[list[Page], StreamState]:
    pages, now = [], served.hs.store.clock.now_ms()
    while served.hs.store.clock.now_ms() <= now:  # the next window must cover the change
        time.sleep(0.001)
    while True:
        page = conn.read_page("contacts", state, 200, FIELDS)
        pages.append(page)
        state = page.next_state
        if not page.has_more:
            return pages, state


def test_a_merge_reports_both_old_ids_on_the_new_record_and_reads_it_once(
    small: Served, connect: Connect
) -> None:
    hs, conn, start = _started(small, connect(small))
    primary, other = hs.store.get("contacts", "7"), hs.store.get("contacts", "9")
    assert primary is not None and other is not None
    merged = small.client().crm.contacts.basic_api.merge(
        PublicMergeInput(primary_object_id="7", object_id_to_merge="9")
    )
    assert merged.id not in ("7", "9") and merged.properties["email"] == primary.data["email"]
    hs.calls.clear()
    pages, _ = _incremental(small, conn, start)
    records = [r for p in pages for r in p.records]
    assert [r["id"] for r in records] == [merged.id]
    assert "hs_merged_object_ids" not in records[0]  # used, not handed on: it was not asked for
    assert {k: v for p in pages for k, v in p.merged_into.items()} == {"7": merged.id, "9": merged.id}
    assert sorted(d for p in pages for d in p.deleted_ids) == ["7", "9"]  # merges_as_deletes: on by default
    assert sum(p.calls for p in pages) == 2  # one search, one archived-list page (nothing archived)
    # the old ids are in neither list, and resolve to the result
    assert {r.id for r in hs.store.dump("contacts")}.isdisjoint({"7", "9"})
    assert small.client().crm.contacts.basic_api.get_by_id("9").id == merged.id


def test_merges_as_deletes_puts_the_losers_in_deleted_ids(small: Served, connect: Connect) -> None:
    _, conn, start = _started(small, connect(small, merges_as_deletes=True))
    first = small.hs.merge_records("contacts", "3", "4")
    second = small.hs.merge_records("contacts", first, "5")  # a merge of a merge: ids accumulate
    pages, _ = _incremental(small, conn, start)
    assert [r["id"] for p in pages for r in p.records] == [second]
    assert sorted(d for p in pages for d in p.deleted_ids) == sorted(["3", "4", "5", first], key=str)
    assert set(pages[0].merged_into) == {"3", "4", "5", first}


def test_without_merges_as_deletes_the_losers_are_only_reported_as_merged(
    small: Served, connect: Connect
) -> None:
    _, conn, start = _started(small, connect(small, merges_as_deletes=False))
    merged = small.hs.merge_records("contacts", "3", "4")
    pages, _ = _incremental(small, conn, start)
    assert [d for p in pages for d in p.deleted_ids] == []
    assert {k: v for p in pages for k, v in p.merged_into.items()} == {"3": merged, "4": merged}


def test_a_legacy_merge_keeps_the_primary_id_and_reports_only_the_other(
    small: Served, connect: Connect
) -> None:
    small.hs.merges.legacy_merge_ids = True
    _, conn, start = _started(small, connect(small))
    assert small.hs.merge_records("contacts", "11", "12") == "11"
    pages, _ = _incremental(small, conn, start)
    assert [r["id"] for p in pages for r in p.records] == ["11"]
    assert {k: v for p in pages for k, v in p.merged_into.items()} == {"12": "11"}


def test_a_gdpr_delete_reports_nothing_and_only_a_reconciliation_finds_it(
    small: Served, connect: Connect
) -> None:
    hs, conn, start = _started(small, connect(small))
    mapped = {r.id for r in hs.store.dump("contacts")}  # what the destination's id map holds
    small.client().crm.contacts.basic_api.purge(PublicGdprDeleteInput(object_id="42"))
    victim = hs.store.get("contacts", "43")
    assert victim is not None
    small.client().crm.contacts.basic_api.purge(
        PublicGdprDeleteInput(object_id=victim.data["email"], id_property="email")
    )
    assert hs.delete_record("contacts", "44")  # an ordinary archive, for contrast
    pages, _ = _incremental(small, conn, start)
    assert [d for p in pages for d in p.deleted_ids] == ["44"]  # the GDPR deletes leave no trace
    hs.calls.clear()
    listed, state, calls = [], StreamState(), 0
    while True:
        page = conn.list_ids("contacts", state, 100)
        listed += page.ids
        calls += page.calls
        state = page.next_state
        if not page.has_more:
            break
    assert len(listed) == len(set(listed)) == 247
    assert mapped - set(listed) == {"42", "43", "44"}
    assert calls == math.ceil(247 / 100) == len(hs.calls.all())


def test_list_ids_is_optional_in_the_contract() -> None:
    assert HubSpotConnector.lists_ids and not Connector.lists_ids

    class Minimal(HubSpotConnector):
        lists_ids = False

    with pytest.raises(ConfigError):
        Connector.list_ids(Minimal.__new__(Minimal), "contacts", StreamState(), 100)
