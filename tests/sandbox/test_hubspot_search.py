"""HubSpot sandbox CRM search via hubspot-api-client: filters, sorts, paging, the 10k cap, the 5/s limit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hubspot.crm.contacts import PublicObjectSearchRequest
from hubspot.crm.contacts.exceptions import ApiException

from sandbox.fake import BASE_EPOCH_MS
from sandbox.hubspot import HubSpotSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import hubspot_support
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_support.hs_ca
served = hubspot_support.served


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """10,300 contacts, search limit off (the cap test pages 51 times)."""
    ca = SandboxCA.ensure(tmp_path_factory.mktemp("hubspot-ca-big"))
    hs = HubSpotSandbox(search_per_second=None)
    hs.seed({"contacts": 10_300}, seed=3)
    yield from hubspot_support.serve(hs, ca)


def _search(served: Served, **kw):
    return served.client().crm.contacts.search_api.do_search(PublicObjectSearchRequest(**kw))


def test_filters_and_sorts(served: Served) -> None:
    served.hs.set_search_limit(None)
    rows = served.hs.live_records("contacts")
    expect = sorted(
        (r for r in rows if int(r["lead_score"]) >= 80 and r.get("customer_tier") == "Gold"),
        key=lambda r: int(r["id"]),
    )
    res = _search(
        served,
        filter_groups=[
            {
                "filters": [
                    {"propertyName": "lead_score", "operator": "GTE", "value": "80"},
                    {"propertyName": "customer_tier", "operator": "EQ", "value": "gold"},  # case-insensitive
                ]
            }
        ],
        properties=["lead_score", "customer_tier"],
        limit=200,
    )
    assert res.total == len(expect) > 0
    assert [r.id for r in res.results] == [r["id"] for r in expect]
    # OR between groups; IN, NOT_HAS_PROPERTY, BETWEEN
    res = _search(
        served,
        filter_groups=[
            {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ["1", "2", "3"]}]},
            {
                "filters": [
                    {
                        "propertyName": "hs_object_id",
                        "operator": "BETWEEN",
                        "value": "100",
                        "highValue": "102",
                    }
                ]
            },
        ],
        limit=10,
    )
    assert [r.id for r in res.results] == ["1", "2", "3", "100", "101", "102"]
    no_phone = _search(
        served,
        filter_groups=[{"filters": [{"propertyName": "phone", "operator": "NOT_HAS_PROPERTY"}]}],
        limit=1,
    )
    assert no_phone.total == sum(1 for r in rows if not r.get("phone"))
    token = _search(
        served,
        filter_groups=[
            {"filters": [{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*.7@*"}]}
        ],
    )
    assert [r.id for r in token.results] == ["8"]


def test_lastmodifieddate_filters_accept_ms_and_iso_and_sort_reflects_changes(served: Served) -> None:
    served.hs.set_search_limit(None)
    since_ms = BASE_EPOCH_MS + 10_000  # records 30.. (ties of three per second)
    by_ms = _search(
        served,
        filter_groups=[
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since_ms)}]}
        ],
        sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        limit=5,
    )
    by_iso = _search(
        served,
        filter_groups=[
            {
                "filters": [
                    {
                        "propertyName": "lastmodifieddate",
                        "operator": "GTE",
                        "value": "2024-01-01T00:00:10.000Z",
                    }
                ]
            }
        ],
        sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        limit=5,
    )
    assert by_ms.total == by_iso.total == 220
    assert [r.id for r in by_ms.results] == [r.id for r in by_iso.results] == ["31", "32", "33", "34", "35"]
    # a modification moves the record to the end of an ascending lastmodifieddate sort
    served.hs.update_record("contacts", "31", {"firstname": "Moved"})
    last = _search(served, sorts=[{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}], limit=1)
    assert last.results[0].id == "31" and last.results[0].properties["firstname"] == "Moved"


def test_search_never_returns_archived_and_pages_by_offset(served: Served) -> None:
    served.hs.set_search_limit(None)
    served.hs.delete_record("contacts", "1")
    seen: list[str] = []
    after = None
    while True:
        page = _search(served, limit=100, after=after)
        seen += [r.id for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(seen) == len(set(seen)) == 249 and "1" not in seen


def test_unknown_filter_property_and_oversized_limit_are_400(served: Served) -> None:
    with pytest.raises(ApiException) as exc:
        _search(
            served, filter_groups=[{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "x"}]}]
        )
    assert exc.value.status == 400
    served.hs.set_search_limit(None)
    with pytest.raises(ApiException) as exc:
        _search(served, limit=201)
    assert exc.value.status == 400 and json.loads(exc.value.body)["category"] == "VALIDATION_ERROR"


def test_ten_thousand_result_cap(big: Served) -> None:
    api = big.client().crm.contacts.search_api
    seen = 0
    after: str | None = None
    errors: list[ApiException] = []
    while True:
        try:
            page = api.do_search(PublicObjectSearchRequest(limit=200, after=after))
        except ApiException as exc:
            errors.append(exc)
            break
        assert page.total == 10_300
        seen += len(page.results)
        after = page.paging.next.after
    assert [e.status for e in errors] == [400]
    assert json.loads(errors[0].body)["category"] == "VALIDATION_ERROR"
    assert seen == 10_000 and after == "10000"
    with pytest.raises(ApiException) as exc_info:
        api.do_search(PublicObjectSearchRequest(limit=100, after="9950"))
    assert exc_info.value.status == 400
    # re-slicing on hs_object_id (what connectors do) reaches the rest
    rest = api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[
                {"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "10000"}]}
            ],
            limit=200,
        )
    )
    assert rest.total == 300


def test_search_rate_limit_is_five_per_second(served: Served) -> None:
    served.hs.quirks.retry_after_header = True  # off by default: HubSpot documents none for 429
    api = served.client().crm.contacts.search_api
    statuses = []
    refused: list[ApiException] = []
    for _ in range(7):
        try:
            api.do_search(PublicObjectSearchRequest(limit=1))
            statuses.append(200)
        except ApiException as exc:
            statuses.append(exc.status)
            refused.append(exc)
    for err in refused:
        body = json.loads(err.body)
        assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "SECONDLY"
        assert int(err.headers["Retry-After"]) >= 1
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    # listing is not limited by the search limit
    assert served.client().crm.contacts.basic_api.get_page(limit=1).results
