"""HubSpot associations v4 through the connector and the sandbox over HTTPS: links written with one
batch create (and one batch archive for re-parented children) per 1,000 pairs, read back with one
batch read, a primary company that moves, refused pairs reported per link, unknown pairs refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from sandbox.tls import SandboxCA
from schemas.connector import Link
from schemas.errors import ConfigError, DataError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 1_200, "companies": 3})


def _ids(served: Served, obj: str) -> list[str]:
    return sorted((r["id"] for r in served.hs.live_records(obj)), key=int)


def test_1200_contacts_linked_in_two_creates_and_read_in_two_reads(served: Served, connect: Connect) -> None:
    contacts, companies = _ids(served, "contacts"), _ids(served, "companies")
    links = [Link(cid, companies[i % 3]) for i, cid in enumerate(contacts)]
    hs = connect(served)
    result = hs.write_links("contacts", "companies", links)
    assert (result.failed, result.calls) == ({}, 2)  # ceil(1,200 / 1,000) batch creates
    expected = {(lk.child_id, lk.parent_id) for lk in links}
    assert served.hs.associations.pairs("contacts", "companies") == expected
    assert served.hs.associations.pairs("companies", "contacts") == {(b, a) for a, b in expected}
    # HubSpot's primary type (1) with the unlabeled one (279), as the contact sees it
    assert served.hs.associations.of("contacts", contacts[0], "companies") == {companies[0]: {1, 279}}

    calls = hs.client.calls
    read = hs.read_links("contacts", "companies", contacts)
    assert hs.client.calls - calls == 2  # ceil(1,200 / 1,000) batch reads
    assert {c: p[0] for c, p in read.items()} == {lk.child_id: lk.parent_id for lk in links}


def test_reparented_contact_moves_with_one_archive_and_one_create(served: Served, connect: Connect) -> None:
    contacts, companies = _ids(served, "contacts"), _ids(served, "companies")
    hs = connect(served)
    hs.write_links("contacts", "companies", [Link(c, companies[0]) for c in contacts[:10]])
    moved = [Link(c, companies[1], previous_id=companies[0]) for c in contacts[:4]]
    result = hs.write_links("contacts", "companies", moved)
    assert (result.failed, result.calls) == ({}, 2)
    pairs = served.hs.associations.pairs("contacts", "companies")
    assert {p for c, p in pairs if c in contacts[:4]} == {companies[1]}
    assert {p for c, p in pairs if c in contacts[4:10]} == {companies[0]}
    assert len(pairs) == 10
    unlinked = hs.write_links("contacts", "companies", [Link(contacts[5], None, previous_id=companies[0])])
    assert unlinked.calls == 1
    assert served.hs.associations.of("contacts", contacts[5], "companies") == {}


def test_primary_moves_to_the_newer_company(served: Served, connect: Connect) -> None:
    contacts, companies = _ids(served, "contacts"), _ids(served, "companies")
    hs = connect(served)
    hs.write_links("contacts", "companies", [Link(contacts[0], companies[0])])
    hs.write_links("contacts", "companies", [Link(contacts[0], companies[1])])  # no previous given
    assert served.hs.associations.of("contacts", contacts[0], "companies") == {
        companies[0]: {279},
        companies[1]: {1, 279},
    }


def test_a_missing_parent_fails_its_link_only(served: Served, connect: Connect) -> None:
    contacts, companies = _ids(served, "contacts"), _ids(served, "companies")
    links = [Link(contacts[0], companies[0]), Link(contacts[1], "999999999"), Link(contacts[2], companies[2])]
    result = connect(served).write_links("contacts", "companies", links)
    assert result.calls == 1
    assert list(result.failed) == [1]
    assert result.failed[1][0] == "VALIDATION_ERROR"
    assert served.hs.associations.pairs("contacts", "companies") == {
        (contacts[0], companies[0]),
        (contacts[2], companies[2]),
    }


def test_a_refused_pair_fails_neither_its_parents_other_children_nor_a_same_numbered_record(
    served: Served, connect: Connect
) -> None:
    """The 207's error names the refused pair by ``fromObjectId`` *and* ``toObjectId``: another
    contact of the same company, and a contact whose id is the number of the refused pair's
    company (the sandbox numbers each object type on its own, so such ids collide), still link."""
    contacts, companies = _ids(served, "contacts"), _ids(served, "companies")
    gone = contacts[5]
    assert served.hs.delete_record("contacts", gone)
    assert contacts[1] == companies[1]  # object types are numbered apart: ids collide across them
    links = [Link(gone, companies[1]), Link(contacts[0], companies[1]), Link(contacts[1], companies[0])]
    result = connect(served).write_links("contacts", "companies", links)
    assert (list(result.failed), result.calls) == ([0], 1)
    assert served.hs.associations.pairs("contacts", "companies") == {
        (contacts[0], companies[1]),
        (contacts[1], companies[0]),
    }


def test_an_unknown_relationship_is_refused_without_a_call(served: Served, connect: Connect) -> None:
    hs = connect(served)
    with pytest.raises(ConfigError, match="cannot link companies to contacts"):
        hs.write_links("companies", "contacts", [Link("1", "2")])
    assert hs.client.calls == 0


@pytest.fixture
def crowded(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 2, "companies": 600})


def test_a_child_with_more_parents_than_a_page_is_read_to_its_last_page(
    crowded: Served, connect: Connect
) -> None:
    contacts, companies = _ids(crowded, "contacts"), _ids(crowded, "companies")
    for co in companies:  # 600 companies of the first contact (the sandbox pages at 500)
        crowded.hs.associations.associate("contacts", contacts[0], "companies", co, [279])
    crowded.hs.associations.associate("contacts", contacts[0], "companies", companies[-1], [1])
    crowded.hs.associations.associate("contacts", contacts[1], "companies", companies[0], [1])
    hs = connect(crowded)
    read = hs.read_links("contacts", "companies", contacts)
    assert hs.client.calls == 2  # one batch read, then the first contact's second page
    assert read[contacts[0]][0] == companies[-1]  # the primary first, wherever its page
    assert sorted(read[contacts[0]], key=int) == companies
    assert read[contacts[1]] == [companies[0]]


@pytest.fixture
def dealt(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 4, "deals": 2})


def _labels_of(served: Served, deal: str) -> dict[str, set[str | None]]:
    """contact id → the labels of its pair with ``deal``, as HubSpot's batch read answers them."""
    names = served.hs.associations.types("deals", "contacts")
    return {
        c: {names.get(x) for x in types}
        for c, types in served.hs.associations.of("deals", deal, "contacts").items()
    }


def test_labels_are_made_once_and_a_label_moves_with_one_archive(dealt: Served, connect: Connect) -> None:
    """Two labels missing: 1 list + 2 creates + 1 list, then 1 batch create carrying them beside
    type 3; a second call knows them (no labels call); an unlabel + relabel is 1 labels archive +
    1 create; an unlabel alone is 1 labels archive and leaves the pair unlabeled."""
    contacts, deals = _ids(dealt, "contacts"), _ids(dealt, "deals")
    dealt.hs.associations.create_label("deals", "contacts", "evaluator", "Evaluator")  # made by hand
    hs = connect(dealt)
    links = [
        Link(deals[0], contacts[0], label="Decision Maker"),
        Link(deals[0], contacts[1], label="Economic Buyer"),
        Link(deals[0], contacts[2], label="Evaluator"),
        Link(deals[1], contacts[3]),
    ]
    dealt.hs.calls.clear()
    result = hs.write_links("deals", "contacts", links)
    assert result.failed == {}
    assert dealt.hs.calls.counts() == {
        "hs.associations.create": 1, "hs.associations.label": 2, "hs.associations.labels": 2,
    }  # fmt: skip
    assert result.calls == 5 and set(result.labels) == {"Decision Maker", "Economic Buyer", "Evaluator"}
    assert _labels_of(dealt, deals[0]) == {
        contacts[0]: {None, "Decision Maker"}, contacts[1]: {None, "Economic Buyer"},
        contacts[2]: {None, "Evaluator"},
    }  # fmt: skip
    assert _labels_of(dealt, deals[1]) == {contacts[3]: {None}}
    read = hs.client.associations("deals", "contacts", "read", [{"id": deals[0]}])[1]
    kinds = {(t["category"], t["label"]) for to in read["results"][0]["to"] for t in to["associationTypes"]}
    assert ("USER_DEFINED", "Decision Maker") in kinds and ("HUBSPOT_DEFINED", None) in kinds
    # the contact→deal side sees the inverse USER_DEFINED type
    assert dealt.hs.associations.types("contacts", "deals") != dealt.hs.associations.types(
        "deals", "contacts"
    )

    dealt.hs.calls.clear()
    buyer = result.labels["Decision Maker"]
    moved = hs.write_links(
        "deals", "contacts",
        [Link(deals[0], contacts[0], label="Economic Buyer", unlabel=buyer),
         Link(deals[0], contacts[1], unlabel=result.labels["Economic Buyer"])],
    )  # fmt: skip
    assert (moved.failed, moved.calls) == ({}, 2)
    assert dealt.hs.calls.counts() == {"hs.associations.create": 1, "hs.associations.unlabel": 1}
    assert _labels_of(dealt, deals[0])[contacts[0]] == {None, "Economic Buyer"}
    assert _labels_of(dealt, deals[0])[contacts[1]] == {None}  # unlabeled, still associated


def test_a_label_name_the_portal_has_is_refused(dealt: Served, connect: Connect) -> None:
    hs = connect(dealt)
    hs.client.associations("deals", "contacts", "label", {"label": "Champion", "name": "champion"})
    with pytest.raises(DataError):
        hs.client.associations("deals", "contacts", "label", {"label": "Champion 2", "name": "champion"})
    listed = hs.client.associations("deals", "contacts", "labels")[1]["results"]
    assert [(r["category"], r["label"]) for r in listed] == [
        ("HUBSPOT_DEFINED", None),
        ("USER_DEFINED", "Champion"),
    ]
