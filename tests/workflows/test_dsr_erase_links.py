"""Issue 18 item 6 ("an erased one does not come back") and data minimisation: ``dsr_erase`` called
directly (ActivityEnvironment) after a real sync against the sandbox CRMs over HTTPS, on the
database of ``db_url``, deletes the subject's relationship state — their link row, their sealed
source snapshot, their own deferral, and the junction row waiting for their record (its queue entry,
its sealed waiting id and sealed role in its own sync) — leaves another subject's rows as they were,
and counts what it deleted in the ``erase`` event (counts only)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from schemas.dsr import DsrInput, DsrKind, DsrResult
from schemas.lineage import EventKind
from store import associations as links_store
from tests.workflows import test_activities
from tests.workflows.test_activities import TENANT, World
from workflows.dsr_activities import DsrActivities, seal_subject

world = test_activities.world
ROLES = "roles"  # the junction sync whose rows wait for a contact of ``contacts``


def _sealed(world: World, text: str, dataset: str, key: str) -> str:
    blob = world.deps.vault.seal(TENANT, text.encode(), dataset=dataset, object_id=key, purpose="crm-sync")
    return base64.b64encode(blob).decode()


def _state_of(world: World, contact_id: str, key: str) -> None:
    """A contact's relationship state: a link, a sealed snapshot, a deferral of their own, and a
    junction row (keyed by its pair) waiting for them in the roles sync."""
    now = datetime.now(UTC)
    pair = world.deps.pseudonymizer.keyed_hash(TENANT, f"deal-{contact_id}:{contact_id}")
    with world.engine.begin() as conn:
        links_store.set_links(
            conn, TENANT, "contacts", "@accounts", [(key, f"hs-{contact_id}", "hs-co")], now=now
        )
        snapshot = _sealed(world, contact_id, "contacts@companies/source", key)
        links_store.set_links(
            conn, TENANT, "contacts", "@companies/source", [(key, snapshot, "kh_co")], now=now
        )
        waiting_id = _sealed(
            world, f'{{"id": "deal-{contact_id}:{contact_id}"}}', "roles@waiting-id@contacts", pair
        )
        links_store.set_links(conn, TENANT, ROLES, "@waiting-id@contacts", [(pair, waiting_id, "")], now=now)
        links_store.set_links(
            conn, TENANT, ROLES, "@role", [(pair, _sealed(world, "Buyer", "roles@role", pair), "")], now=now
        )
        links_store.defer(
            conn,
            TENANT,
            [
                links_store.Deferred("contacts", "@accounts", key, f"hs-{contact_id}", "Contact", "Account",
                                     "accounts", "kh_account", 1, now),
                links_store.Deferred(ROLES, "@contacts", pair, "", "OpportunityContactRole", "Contact",
                                     "contacts", key, 1, now),
            ],
            now=now,
        )  # fmt: skip


def _rows(world: World) -> dict[str, set[tuple[Any, ...]]]:
    with world.engine.connect() as conn:
        return {
            name: {tuple(r) for r in conn.execute(select(table).where(table.c.tenant == TENANT))}
            for name, table in (
                ("links", links_store.association_links),
                ("deferrals", links_store.association_deferrals),
            )
        }


def _erase(world: World, source_id: str) -> tuple[str, DsrResult]:
    request_id = uuid.uuid4().hex[:16]
    inp = DsrInput(
        request_id=request_id,
        tenant=TENANT,
        kind=DsrKind.ERASE,
        sealed_subject=seal_subject(world.deps.vault, TENANT, request_id, None, [source_id]),
    )
    result: DsrResult = ActivityEnvironment().run(DsrActivities(world.deps).dsr_erase, inp)
    return request_id, result


def test_erase_deletes_the_subjects_links_deferrals_and_waiting_junction_rows_only(world: World) -> None:
    world.add_sync()
    world.run()
    subject, other = sorted(str(r["id"]) for r in world.salesforce_contacts())[:2]
    ids = {"subject": subject, "other": other}
    keys = {n: world.deps.pseudonymizer.keyed_hash(TENANT, i) for n, i in ids.items()}
    _state_of(world, ids["other"], keys["other"])
    kept = _rows(world)
    _state_of(world, ids["subject"], keys["subject"])
    before = _rows(world)
    assert (len(before["links"]), len(before["deferrals"])) == (8, 4)

    request_id, result = _erase(world, ids["subject"])

    assert result.id_map_rows == 1  # the subject's key is the sync's: their id-map row went too
    assert (result.association_links, result.association_deferrals) == (4, 2)
    assert _rows(world) == kept  # none of the subject's rows left; the other subject's untouched
    (event,) = [e for e in world.events(f"dsr:{request_id}") if e.kind is EventKind.ERASE]
    assert (event.counts["association_links"], event.counts["association_deferrals"]) == (4, 2)
    assert event.record_id_hashes == (keys["subject"],)

    _, again = _erase(world, ids["subject"])  # a repeat finds nothing left
    assert (again.association_links, again.association_deferrals) == (0, 0)
    assert _rows(world) == kept
