"""Relationships as Salesforce lookups through the connector and the sandbox over HTTPS: 300
contacts linked to their accounts in ceil(300 / 200) Collections updates, a re-parented contact
moved and a cleared one unlinked in one more, a missing child refused alone, unknown pairs refused
without a call."""

from __future__ import annotations

import pytest

from schemas.connector import Link
from schemas.errors import ConfigError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import Org

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org
pytestmark = pytest.mark.integration


def _ids(org: Org, obj: str) -> list[str]:
    return sorted(r.id for r in org.sb.store.dump(obj, include_deleted=False))


def _account_of(org: Org) -> dict[str, str | None]:
    return {r["id"]: r.get("AccountId") for r in org.sb.live_records("Contact")}


def test_300_contacts_linked_in_two_updates_then_moved_and_cleared_in_one(org: Org) -> None:
    contacts, accounts = _ids(org, "Contact"), _ids(org, "Account")
    sf = org.connector()
    links = [Link(c, accounts[i % 7]) for i, c in enumerate(contacts)]
    calls = sf.calls
    result = sf.write_links("Contact", "Account", links)
    assert (result.failed, result.calls, sf.calls - calls) == ({}, 2, 2)  # ceil(300 / 200)
    assert _account_of(org) == {lk.child_id: lk.parent_id for lk in links}

    moved = Link(contacts[0], accounts[9], previous_id=accounts[0])  # setting the lookup moves it
    cleared = Link(contacts[1], None, previous_id=accounts[1])
    result = sf.write_links("Contact", "Account", [moved, cleared])
    assert (result.failed, result.calls) == ({}, 1)
    now = _account_of(org)
    assert (now[contacts[0]], now[contacts[1]], now[contacts[2]]) == (accounts[9], None, accounts[2])


def test_a_missing_child_fails_its_link_only(org: Org) -> None:
    contacts, accounts = _ids(org, "Contact"), _ids(org, "Account")
    missing = "003" + "0" * 12 + "XYZ"
    result = org.connector().write_links(
        "Contact", "Account", [Link(contacts[0], accounts[0]), Link(missing, accounts[0])]
    )
    assert result.calls == 1 and list(result.failed) == [1]
    assert _account_of(org)[contacts[0]] == accounts[0]


def test_an_unknown_relationship_is_refused_without_a_call(org: Org) -> None:
    sf = org.connector()
    with pytest.raises(ConfigError, match="cannot link Account to Contact"):
        sf.write_links("Account", "Contact", [Link("001", "003")])
    assert sf.calls == 0
