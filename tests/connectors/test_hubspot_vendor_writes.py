"""HubSpot writes as production portals take them, through the real connector: ``date`` properties
refuse any time but midnight UTC (``INVALID_DATE``), datetime values arrive as ISO (with or without
milliseconds), epoch-ms strings or objects, and batch create may answer 200 instead of 201. Each test
asserts the stored values and the calls: dates never cost a bisection (2n - 1 calls)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from sandbox.faults import FaultPlan, FaultRule
from sandbox.hubspot.quirks import Quirks
from sandbox.tls import SandboxCA
from schemas.connector import OutcomeStatus, WriteMode
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]


@pytest.fixture
def dated(hs_ca: SandboxCA) -> Iterator[Served]:
    """An empty portal whose contacts have a ``date`` and a ``datetime`` custom property."""
    for served in portal(hs_ca, {}):
        served.hs.add_property("contacts", "renewal_date", type="date", field_type="date")
        served.hs.add_property("contacts", "last_seen_at", type="datetime", field_type="date")
        yield served


def _mixed(n: int, tag: str) -> list[dict[str, object]]:
    """Half the records carry dates in the shapes a Salesforce or HubSpot source hands over."""
    shapes: list[tuple[object, object]] = [
        ("2024-05-01T13:45:00.000Z", "2024-05-01T13:45:00.000Z"),  # Salesforce DateTime
        ("2024-05-01T13:45:00Z", "2024-05-01T13:45:00Z"),  # ISO without milliseconds
        (dt.datetime(2024, 5, 1, 23, 59, tzinfo=dt.UTC), dt.datetime(2024, 5, 1, 23, 59, tzinfo=dt.UTC)),
        ("1714571100000", "1714571100000"),  # epoch-ms strings (2024-05-01T13:45:00Z)
        (dt.date(2024, 5, 1), "2024-05-01"),  # a Salesforce Date into both
    ]
    out: list[dict[str, object]] = []
    for k in range(n):
        rec: dict[str, object] = {"email": f"{tag}-{k}@example.com", "firstname": f"F{k}"}
        if k % 2 == 0:
            renewal, seen = shapes[(k // 2) % len(shapes)]
            rec["renewal_date"], rec["last_seen_at"] = renewal, seen
        out.append(rec)
    return out


def _stored(served: Served, prop: str) -> set[object]:
    return {r.data.get(prop) for r in served.hs.store.dump("contacts") if prop in r.data}


def test_a_mixed_batch_with_non_midnight_dates_costs_one_batch_call(dated: Served, connect: Connect) -> None:
    conn = connect(dated)
    res = conn.write_batch("contacts", _mixed(100, "a"), WriteMode.UPSERT, external_id="email")
    assert res.counts()["created"] == 100, [o.error_code for o in res.failed]
    assert res.calls == 2  # the properties (once per writer), then one batch: no refusal, no bisection
    assert _stored(dated, "renewal_date") == {"2024-05-01"}  # midnight UTC of the day, every shape
    assert _stored(dated, "last_seen_at") == {
        "2024-05-01T13:45:00.000Z",
        "2024-05-01T23:59:00.000Z",
        "2024-05-01T00:00:00.000Z",
    }
    again = conn.write_batch("contacts", _mixed(100, "b"), WriteMode.UPSERT, external_id="email")
    assert again.counts()["created"] == 100 and again.calls == 1  # the types are known now
    counts = dated.hs.calls.counts()
    assert counts["hs.properties.list"] == 1 and counts["hs.batch.upsert.contacts"] == 2


def test_a_refused_date_teaches_the_types_and_is_resent_once_not_bisected(
    dated: Served, connect: Connect
) -> None:
    """Epoch-ms strings do not look like dates, so the first batch goes out unconverted; HubSpot
    refuses it (INVALID_DATE); the writer learns the types and resends the converted batch."""
    conn = connect(dated)
    records = [
        {"email": f"ms-{k}@example.com", "renewal_date": str(1714571100000 + k * 86_400_000)}
        for k in range(100)
    ]
    res = conn.write_batch("contacts", records, WriteMode.UPSERT, external_id="email")
    assert res.counts()["created"] == 100, [o.error_code for o in res.failed]
    assert res.calls == 3  # refused batch, properties, converted batch (bisection: 199)
    assert [c.status for c in dated.hs.calls.all() if c.endpoint == "hs.batch.upsert.contacts"] == [400, 200]
    assert len(_stored(dated, "renewal_date")) == 100


def test_a_describe_hands_its_types_to_the_writer(dated: Served, connect: Connect) -> None:
    conn = connect(dated)
    conn.describe("contacts")
    res = conn.write_batch("contacts", _mixed(10, "c"), WriteMode.UPSERT, external_id="email")
    assert not res.failed
    assert res.calls == 1 and dated.hs.calls.counts()["hs.properties.list"] == 1  # the describe's


def test_a_bad_date_still_fails_alone_with_hubspots_code(dated: Served, connect: Connect) -> None:
    conn = connect(dated)
    records = _mixed(10, "d")
    records[3]["renewal_date"] = "2024-02-30"  # no such day: sent as it is, refused by HubSpot
    res = conn.write_batch("contacts", records, WriteMode.UPSERT, external_id="email")
    assert [o.index for o in res.failed] == [3] and res.failed[0].error_code == "INVALID_DATE"
    assert res.counts()["created"] == 9 and res.calls <= 3


@pytest.fixture
def create_200(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {}, quirks=Quirks(batch_create_status=200))


def test_a_batch_create_answered_200_is_a_success(create_200: Served, connect: Connect) -> None:
    records = [{"email": f"c{k}@example.com", "firstname": "C"} for k in range(20)]
    res = connect(create_200).write_batch("contacts", records, WriteMode.CREATE, external_id="email")
    assert [o.status for o in res.outcomes] == [OutcomeStatus.CREATED] * 20 and res.calls == 1
    assert [c.status for c in create_200.hs.calls.all()] == [200]
    assert len({o.id for o in res.outcomes}) == 20


@pytest.fixture
def empty(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {})


def test_an_upsert_resent_after_its_applied_answer_was_lost_still_counts_what_it_created(
    empty: Served, connect: Connect
) -> None:
    """The first send of a batch upsert is carried out but its answer is lost (a gateway timeout
    after HubSpot committed); the connector resends it, and HubSpot now answers ``new: false`` for
    every contact the lost send created. They are still created by this write: their ``createdAt``
    falls inside the write's own window (HubSpot's clock: ``updatedAt - createdAt`` is no longer than
    the write took), while a contact the portal held before keeps an older ``createdAt``."""
    before = connect(empty).write_batch(
        "contacts", [{"email": "old@example.com", "firstname": "Old"}], WriteMode.UPSERT, external_id="email"
    )
    assert [o.status for o in before.outcomes] == [OutcomeStatus.CREATED]
    time.sleep(0.2)  # the portal held it a while before this write
    lose = FaultRule(endpoint="hs.batch.upsert.contacts", lost=1.0)
    empty.hs.faults.set_plan(FaultPlan(seed=1, rules=[lose]))
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the client's backoff before its resend: HubSpot answers again
        pauses.append(seconds)
        empty.hs.faults.clear()

    conn = connect(empty, sleep=pause)
    empty.hs.calls.clear()
    records = [{"email": "old@example.com", "firstname": "Again"}] + [
        {"email": f"n{k}@example.com", "firstname": "N"} for k in range(99)
    ]
    res = conn.write_batch("contacts", records, WriteMode.UPSERT, external_id="email")
    upserts = [c.endpoint for c in empty.hs.calls.all()]
    assert upserts == ["hs.batch.upsert.contacts"] * 2 and len(pauses) == 1  # lost, then resent
    assert [o.status for o in res.outcomes] == [OutcomeStatus.UPDATED] + [OutcomeStatus.CREATED] * 99
    assert len(empty.hs.live_records("contacts")) == 100
