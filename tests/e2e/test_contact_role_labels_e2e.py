"""End to end (issue 14): Salesforce ``OpportunityContactRole.Role`` → HubSpot association labels on
the deal↔contact pairs, through the real stack (dev server, sandbox CRMs over HTTPS, OAuth).

``{"OpportunityId": "@deals", "ContactId": "@contacts", "Role": "@label"}``: each role value is a
USER_DEFINED deal→contact label, made once (:mod:`workflows.junction_labels`). The roles run first
and wait; the contacts run links them, making the 3 missing labels (1 list + 3 creates + 1 list)
and creating every pair with its label in one batch create. The next incremental run moves changed
roles' labels (one batch labels archive + one batch create, one new label made) and a deleted
twin's label goes while the pair another role holds stays. Labels are read back at HubSpot.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.demo import _workers
from governance.pseudonym import Pseudonymizer
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from tests.e2e.links_support import event_counts, roles_tenant
from tests.sync_support import World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLE_FIELDS = ["Id", "OpportunityId", "ContactId", "Role", "SystemModstamp"]
LABELED = {"OpportunityId": "@deals", "ContactId": "@contacts", "Role": "@label"}


async def _tenant(
    world: World, tenant: str, role_fields: list[str], hidden: tuple[str, ...] = ("Id",)
) -> None:
    await roles_tenant(world, tenant, role_fields, LABELED, hidden=hidden)


def _one_role(world: World, role: str = "Evaluator") -> None:
    """One Opportunity, one Contact, one role."""
    world.sf.seed({"Contact": 1})
    opp = world.sf.create_record(
        "Opportunity", {"Name": "D", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
    )
    world.sf.create_record(
        "OpportunityContactRole",
        {"OpportunityId": opp, "ContactId": world.sf.live_records("Contact")[0]["id"], "Role": role},
    )


def _wanted(world: World, tenant: str) -> dict[tuple[str, str], set[str | None]]:
    """(HubSpot deal id, contact id) → the labels the live Salesforce roles give it (``None``: the
    unlabeled type every pair carries)."""
    ps = Pseudonymizer(world.connected.vault)
    deal = {r["external_id"]: r["id"] for r in world.hs.live_records("deals")}
    contact = {r["email"]: r["id"] for r in world.hs.live_records("contacts")}
    email = {c["id"]: c["Email"].lower() for c in world.sf.live_records("Contact")}
    out: dict[tuple[str, str], set[str | None]] = {}
    for r in world.sf.live_records("OpportunityContactRole"):
        pair = (deal[str(ps.pseudonymize(tenant, r["OpportunityId"]))], contact[email[r["ContactId"]]])
        out.setdefault(pair, {None}).update([r["Role"]] if r.get("Role") else [])
    return out


def _at_hubspot(world: World) -> dict[tuple[str, str], set[str | None]]:
    """Every deal→contact pair at HubSpot with the labels of its types."""
    assoc = world.hs.associations
    names = assoc.types("deals", "contacts")
    deals = {d for d, _ in assoc.pairs("deals", "contacts")}
    return {
        (d, c): {names[x] for x in types}
        for d in deals
        for c, types in assoc.of("deals", d, "contacts").items()
    }


async def test_roles_become_labels_made_once_and_a_changed_role_moves_its_label(world: World) -> None:
    tenant = "sf-role-labels"
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 40})
    contacts = sorted(r["id"] for r in sf.live_records("Contact"))
    kinds = ["Decision Maker", "Evaluator", None]
    roles = []  # (role id, its Role)
    for i in range(20):
        opp = sf.create_record(
            "Opportunity", {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
        )
        for j in range(2):
            kind = kinds[(2 * i + j) % 3]
            fields: dict[str, Any] = {"OpportunityId": opp, "ContactId": contacts[2 * i + j]}
            roles.append(
                (sf.create_record("OpportunityContactRole", fields | ({"Role": kind} if kind else {})), kind)
            )
    first = sf.live_records("OpportunityContactRole")[0]  # a second role on one pair: two labels
    twin = sf.create_record(
        "OpportunityContactRole",
        {"OpportunityId": first["OpportunityId"], "ContactId": first["ContactId"], "Role": "Economic Buyer"},
    )
    await _tenant(world, tenant, ROLE_FIELDS)
    async with _workers(world.settings):
        waiting = await run_sync(world.connected, world.settings, tenant, "roles")  # before both ends
        assert waiting.status is SyncStatus.COMPLETED
        assert event_counts(world, tenant, waiting.run_id, EventKind.PUSH)["deferred"] == 41
        await run_sync(world.connected, world.settings, tenant, "deals")
        hs.calls.clear()
        people = await run_sync(world.connected, world.settings, tenant, "contacts")
        assert people.status is SyncStatus.COMPLETED and people.counts.pushed == 40
        released = event_counts(world, tenant, people.run_id, EventKind.PUSH)
        # 1 contacts upsert; labels: 1 list + 3 creates (the missing roles) + 1 list; 1 batch create
        assert (released["released"], released["link_calls"], released["calls"]) == (41, 6, 7)
        made = hs.calls.counts()
        assert (made["hs.associations.label"], made["hs.associations.labels"]) == (3, 2)
        assert made["hs.associations.create"] == 1
        labels = {lb for lb in hs.associations.types("deals", "contacts").values() if lb}
        assert labels == {"Decision Maker", "Evaluator", "Economic Buyer"}
        at_hubspot = _at_hubspot(world)
        assert len(at_hubspot) == 40 and at_hubspot == _wanted(world, tenant)
        assert sum(1 for lbs in at_hubspot.values() if lbs == {None}) == 13  # the rows without a role
        assert {"Decision Maker", "Economic Buyer"} < next(v for v in at_hubspot.values() if len(v) == 3)

        # 3 Decision Makers become Champions (a new label), 2 Evaluators lose their role, 1 row
        # without one becomes an Evaluator, the twin is deleted (its pair stays: the other role holds it)
        deciders = [r for r, k in roles if k == "Decision Maker" and r != first["id"]][:3]
        for role in deciders:
            sf.update_record("OpportunityContactRole", role, {"Role": "Champion"})
        for role in [r for r, k in roles if k == "Evaluator"][:2]:
            sf.update_record("OpportunityContactRole", role, {"Role": None})
        sf.update_record(
            "OpportunityContactRole", next(r for r, k in roles if k is None), {"Role": "Evaluator"}
        )
        sf.delete_record("OpportunityContactRole", twin)
        hs.calls.clear()
        moved = await run_sync(world.connected, world.settings, tenant, "roles", SyncMode.INCREMENTAL)
    assert moved.status is SyncStatus.COMPLETED and moved.counts.failed == 0
    at_hubspot = _at_hubspot(world)
    assert len(at_hubspot) == 40 and at_hubspot == _wanted(world, tenant)
    counts = event_counts(world, tenant, moved.run_id, EventKind.PUSH)
    assert (counts["linked"], counts["unlinked"], counts["relabeled"]) == (0, 1, 6)
    # labels: 1 list + 1 create (Champion) + 1 list; 1 batch labels archive (3 + 2 + the twin's) and
    # 1 batch create (3 Champions + 1 Evaluator); no pair archived
    assert (counts["link_calls"], counts["calls"]) == (5, 5)
    association_calls = {k: v for k, v in hs.calls.counts().items() if k.startswith("hs.associations")}
    assert association_calls == {
        "hs.associations.create": 1, "hs.associations.label": 1, "hs.associations.labels": 2,
        "hs.associations.unlabel": 1,
    }  # fmt: skip


async def test_a_label_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "sf-role-labels-refused"
    _one_role(world)
    await _tenant(world, tenant, ["Id", "OpportunityId", "ContactId", "SystemModstamp"])  # no Role
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, "roles", may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "Role" in refused.message and "allowed_fields.OpportunityContactRole" in refused.message
    assert world.hs.associations.types("deals", "contacts") == {3: None}  # no label made


async def test_a_pseudonymized_role_refuses_the_plan(world: World) -> None:
    """A pseudonym is no role: the plan fails naming the fix, and no label is made."""
    tenant = "sf-role-labels-hidden"
    _one_role(world)
    await _tenant(world, tenant, ROLE_FIELDS, hidden=("Id", "Role"))
    async with _workers(world.settings):
        for parent in ("deals", "contacts"):
            await run_sync(world.connected, world.settings, tenant, parent)
        failed: Any = await run_sync(world.connected, world.settings, tenant, "roles", may_fail=True)
    assert failed.status is not SyncStatus.COMPLETED
    assert (
        "pseudonymize.OpportunityContactRole" in failed.message and "a pseudonym is no role" in failed.message
    )
    assert world.hs.associations.types("deals", "contacts") == {3: None}


async def test_a_role_too_long_to_keep_is_dead_lettered(world: World) -> None:
    """A role of more than ROLE_LIMIT (150) UTF-8 bytes (20 two-byte and 51 three-byte characters:
    193) is refused ``LABEL_TOO_LONG``; one of exactly 150 (50 three-byte characters) is kept —
    sealed, it fits the store's column on PostgreSQL too — and labels its pair."""
    tenant = "sf-role-labels-long"
    _one_role(world, "é" * 20 + "日" * 51)
    first = world.sf.live_records("OpportunityContactRole")[0]
    fits = "日" * 50
    world.sf.create_record(
        "OpportunityContactRole",
        {"OpportunityId": first["OpportunityId"], "ContactId": first["ContactId"], "Role": fits},
    )
    await _tenant(world, tenant, ROLE_FIELDS)
    async with _workers(world.settings):
        early = await run_sync(world.connected, world.settings, tenant, "roles")  # waits: roles kept sealed
        assert (early.counts.pushed, early.counts.failed) == (0, 1)
        for parent in ("deals", "contacts"):
            await run_sync(world.connected, world.settings, tenant, parent)
    with world.connected.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, tenant, "roles")
    assert [dl.error_code for dl in letters] == ["LABEL_TOO_LONG"]
    assert {lb for lb in world.hs.associations.types("deals", "contacts").values() if lb} == {fits}
    assert _at_hubspot(world) == {next(iter(world.hs.associations.pairs("deals", "contacts"))): {None, fits}}
