"""HubSpot sandbox CRM objects, batch and properties, driven by hubspot-api-client over real HTTPS."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException
from hubspot.crm.properties import PropertyCreate

from tests.sandbox import hubspot_support
from tests.sandbox.hubspot_support import Served

# fixtures shared by the HubSpot test modules
hs_ca = hubspot_support.hs_ca
served = hubspot_support.served

FIXTURES = "/work/shared/vendor-fixtures/hubspot"


def _all_pages(api: Any, **kw: Any) -> list[Any]:
    out, after = [], None
    while True:
        page = api.get_page(limit=100, after=after, **kw)
        out.extend(page.results)
        if page.paging is None or page.paging.next is None:
            return out
        after = page.paging.next.after


def test_get_page_pages_to_exhaustion_without_duplicates(served: Served) -> None:
    api = served.client().crm.contacts.basic_api
    first = api.get_page()
    assert len(first.results) == 10  # documented default limit
    # paging_next_page fixture shape; absolute, with the request's query, as the live API answers
    after = first.paging.next.after
    assert first.paging.next.link == f"{served.srv.url}/crm/v3/objects/contacts?after={after}"
    rows = _all_pages(api)
    ids = [r.id for r in rows]
    assert len(ids) == 250
    assert len(set(ids)) == 250
    assert ids == sorted(ids, key=int)


def test_record_shape_matches_the_spec_example(served: Served) -> None:
    with open(f"{FIXTURES}/object_simple_public_object.example.hubspot_spec.json") as fh:
        example = json.load(fh)
    raw = served.client().crm.contacts.basic_api.get_page(limit=1, _preload_content=False)
    rec = json.loads(raw.data)["results"][0]
    assert set(example) <= set(rec)
    assert all(v is None or isinstance(v, str) for v in rec["properties"].values())
    assert set(rec["properties"]) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert rec["properties"]["hs_object_id"] == rec["id"]
    assert rec["properties"]["lastmodifieddate"] == rec["updatedAt"]
    assert rec["createdAt"].endswith("Z") and rec["archived"] is False


def test_archived_listing_returns_only_archived(served: Served) -> None:
    client = served.client()
    api = client.crm.contacts.basic_api
    for rid in ("3", "17", "200"):
        api.archive(rid)
    archived = _all_pages(api, archived=True)
    assert sorted(r.id for r in archived) == ["17", "200", "3"]
    assert all(r.archived and r.archived_at is not None for r in archived)
    live = _all_pages(api)
    assert len(live) == 247 and not {"3", "17", "200"} & {r.id for r in live}
    with pytest.raises(NotFoundException):
        api.get_by_id("17")
    assert api.get_by_id("17", archived=True).archived is True


def test_companies_and_deals_use_hs_lastmodifieddate(served: Served) -> None:
    objects = served.client().crm.objects.basic_api
    company = objects.get_page("companies", limit=1).results[0]
    deal = objects.get_page("deals", limit=1, properties=["amount", "nope"]).results[0]
    assert "hs_lastmodifieddate" in company.properties and "lastmodifieddate" not in company.properties
    assert set(deal.properties) == {"amount", "createdate", "hs_lastmodifieddate", "hs_object_id"}


def test_requested_properties_unknown_ones_are_ignored(served: Served) -> None:
    page = served.client().crm.contacts.basic_api.get_page(limit=5, properties=["jobtitle", "no_such_prop"])
    for rec in page.results:
        assert set(rec.properties) == {"createdate", "hs_object_id", "jobtitle", "lastmodifieddate"}


def test_get_create_update_archive_and_conflict(served: Served) -> None:
    api = served.client().crm.contacts.basic_api
    created = api.create(
        SimplePublicObjectInputForCreate(properties={"email": "Ada@Example.TEST", "firstname": "Ada"})
    )
    assert int(created.id) == 251 and created.properties["email"] == "ada@example.test"
    by_email = api.get_by_id("ada@example.test", id_property="email", properties=["firstname"])
    assert by_email.id == created.id and by_email.properties["firstname"] == "Ada"
    updated = api.update(
        created.id, SimplePublicObjectInput(properties={"lead_score": 42, "customer_tier": "Gold"})
    )
    assert updated.properties["lead_score"] == "42"
    assert updated.updated_at >= created.updated_at
    with pytest.raises(ApiException) as exc:
        api.create(SimplePublicObjectInputForCreate(properties={"email": "ada@example.test"}))
    assert exc.value.status == 409
    body = json.loads(exc.value.body)
    assert (
        body["category"] == "CONFLICT"
        and body["message"] == f"Contact already exists. Existing ID: {created.id}"
    )
    api.archive(created.id)
    with pytest.raises(NotFoundException):
        api.get_by_id(created.id)


@pytest.mark.parametrize(
    ("props", "code"),
    [
        ({"email": "not-an-email"}, "INVALID_EMAIL"),
        ({"favourite_colour": "blue"}, "PROPERTY_DOESNT_EXIST"),
        ({"customer_tier": "Platinum"}, "INVALID_OPTION"),
        ({"lead_score": "lots"}, "INVALID_NUMBER"),
        ({"hs_object_id": "5"}, "READ_ONLY_VALUE"),
    ],
)
def test_invalid_values_are_a_400_validation_error(served: Served, props, code) -> None:
    with pytest.raises(ApiException) as exc:
        served.client().crm.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=props))
    assert exc.value.status == 400
    body = json.loads(exc.value.body)
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error" and body["correlationId"]
    assert body["message"].startswith("Property values were not valid: ")
    problems = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert [p["error"] for p in problems] == [code]


def test_batch_read_by_email_returns_207_like_the_captured_payload(served: Served) -> None:
    client = served.client()
    emails = [r.properties["email"] for r in client.crm.contacts.basic_api.get_page(limit=3).results]
    wanted = [*emails, "raj+3@valmi.io", "raj+2@valmi.io"]
    resp = client.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": e} for e in wanted],
            id_property="email",
            properties=["email"],
            properties_with_history=[],
        )
    )
    # hubspot-api-client returns (does not raise) for 207: the *WithErrors model.
    assert type(resp).__name__ == "BatchResponseSimplePublicObjectWithErrors"
    assert resp.status == "COMPLETE" and resp.num_errors == 1
    assert sorted(r.properties["email"] for r in resp.results) == sorted(emails)
    err = resp.errors[0]
    assert err.category == "OBJECT_NOT_FOUND"
    assert err.message == (
        "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
    )
    assert err.context == {"ids": ["raj+3@valmi.io", "raj+2@valmi.io"]}
    with open(f"{FIXTURES}/batch_read_by_email_207_object_not_found.captured.json") as fh:
        captured = json.load(fh)
    raw = client.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": e} for e in wanted],
            id_property="email",
            properties=["email"],
            properties_with_history=[],
        ),
        _preload_content=False,
    )
    assert raw.status == 207
    got = json.loads(raw.data)
    assert set(got) == set(captured)
    assert set(got["results"][0]["properties"]) == set(captured["results"][0]["properties"])
    assert set(got["errors"][0]) == set(captured["errors"][0])


def test_batch_create_update_and_archive(served: Served) -> None:
    client = served.client()
    batch = client.crm.contacts.batch_api
    created = batch.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[{"properties": {"email": f"b{i}@batch.test", "lead_score": str(i)}} for i in range(3)]
        )
    )
    assert created.status == "COMPLETE" and len(created.results) == 3
    ids = [r.id for r in created.results]
    updated = batch.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[
                {"id": ids[0], "properties": {"firstname": "One"}},
                {"id": "999999", "properties": {"firstname": "X"}},
            ]
        )
    )
    assert type(updated).__name__ == "BatchResponseSimplePublicObjectWithErrors"
    assert [r.properties["firstname"] for r in updated.results] == ["One"]
    assert updated.errors[0].category == "OBJECT_NOT_FOUND" and updated.errors[0].context == {
        "ids": ["999999"]
    }
    batch.archive(BatchInputSimplePublicObjectId(inputs=[{"id": i} for i in ids]))
    assert {r["id"] for r in served.hs.live_records("contacts")}.isdisjoint(ids)
    # a duplicate e-mail fails the whole batch with 409, naming the existing record
    with pytest.raises(ApiException) as exc:
        batch.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[
                    {"properties": {"email": "fresh@batch.test"}},
                    {"properties": {"email": served.hs.live_records("contacts")[0]["email"]}},
                ]
            )
        )
    assert exc.value.status in (400, 409)
    assert not served.hs.store.find("contacts", "email", "fresh@batch.test")


def test_batch_upsert_creates_and_updates_and_is_atomic_on_bad_values(served: Served) -> None:
    client = served.client()
    existing = client.crm.contacts.basic_api.get_by_id("5")
    resp = client.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "new.person@upsert.test", "idProperty": "email", "properties": {"firstname": "New"}},
                {
                    "id": existing.properties["email"],
                    "idProperty": "email",
                    "properties": {"firstname": "Changed"},
                },
            ]
        )
    )
    by_email = {r.properties["email"]: r for r in resp.results}
    assert by_email["new.person@upsert.test"].new is True
    assert by_email[existing.properties["email"]].new is False
    assert by_email[existing.properties["email"]].id == "5"
    assert client.crm.contacts.basic_api.get_by_id("5").properties["firstname"] == "Changed"
    # upsert by a custom unique property
    resp2 = client.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[{"id": "ext-7-c4", "idProperty": "external_id", "properties": {"jobtitle": "CFO"}}]
        )
    )
    assert resp2.results[0].id == "5" and resp2.results[0].new is False
    # one bad value fails the whole batch (nothing written)
    with pytest.raises(ApiException) as exc:
        client.crm.contacts.batch_api.upsert(
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[
                    {"id": "ok@upsert.test", "idProperty": "email", "properties": {"firstname": "Ok"}},
                    {"id": "bad@upsert.test", "idProperty": "email", "properties": {"customer_tier": "Nope"}},
                ]
            )
        )
    assert exc.value.status == 400 and "INVALID_OPTION" in json.loads(exc.value.body)["message"]
    assert not served.hs.store.find("contacts", "email", "ok@upsert.test")
    # a non-unique idProperty is refused
    with pytest.raises(ApiException) as exc:
        client.crm.contacts.batch_api.upsert(
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[{"id": "Ada", "idProperty": "firstname", "properties": {"lastname": "L"}}]
            )
        )
    assert (
        json.loads(exc.value.body)["message"] == "Unable to perform update/upsert by non-unique 0-1 property"
    )


def test_batch_over_100_inputs_is_a_400(served: Served) -> None:
    with pytest.raises(ApiException) as exc:
        served.client().crm.contacts.batch_api.read(
            BatchReadInputSimplePublicObjectId(
                inputs=[{"id": str(i)} for i in range(1, 102)], properties=[], properties_with_history=[]
            )
        )
    assert exc.value.status == 400 and json.loads(exc.value.body)["category"] == "VALIDATION_ERROR"


def test_properties_api_and_schema_drift(served: Served) -> None:
    client = served.client()
    core = client.crm.properties.core_api
    props = {p.name: p for p in core.get_all("contacts").results}
    assert {"email", "firstname", "createdate", "lastmodifieddate", "customer_tier", "lead_score"} <= set(
        props
    )
    assert props["external_id"].has_unique_value is True
    assert props["customer_tier"].type == "enumeration" and [
        o.value for o in props["customer_tier"].options
    ] == [
        "Gold",
        "Silver",
        "Bronze",
    ]
    assert props["createdate"].modification_metadata.read_only_value is True
    created = core.create(
        "contacts",
        PropertyCreate(
            name="nps", label="NPS", type="number", field_type="number", group_name="contactinformation"
        ),
    )
    assert created.name == "nps"
    assert core.get_by_name("contacts", "nps").type == "number"
    # drift through the Python handle: retype then drop
    served.hs.retype_property("contacts", "lead_score", "string")
    assert core.get_by_name("contacts", "lead_score").type == "string"
    served.hs.drop_property("contacts", "jobtitle")
    assert "jobtitle" not in {p.name for p in core.get_all("contacts").results}
    assert "jobtitle" in {p.name for p in core.get_all("contacts", archived=True).results}
    rec = client.crm.contacts.basic_api.get_by_id("1", properties=["jobtitle"])
    assert "jobtitle" not in rec.properties
    with pytest.raises(ApiException) as exc:
        client.crm.contacts.basic_api.update("1", SimplePublicObjectInput(properties={"jobtitle": "CEO"}))
    assert "PROPERTY_DOESNT_EXIST" in json.loads(exc.value.body)["message"]


def test_python_handle_writes_bump_lastmodifieddate(served: Served) -> None:
    hs = served.hs
    hs.store.clock.freeze(1_800_000_000_000)
    try:
        new_id = hs.create_record("contacts", {"email": "handle@x.test", "firstname": "H"})
        assert hs.update_record("contacts", "2", {"lastname": "Z"})
        assert hs.delete_record("contacts", "4")
    finally:
        hs.store.clock.unfreeze()
    api = served.client().crm.contacts.basic_api
    assert api.get_by_id(new_id).updated_at.year == 2027
    assert api.get_by_id("2").properties["lastmodifieddate"] == "2027-01-15T08:00:00.000Z"
    assert api.get_by_id("4", archived=True).archived is True
