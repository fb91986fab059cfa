"""HubSpot batch writes: one outcome per record in order, bad records isolated from whole-batch
rejections (by the problems HubSpot lists, else by bisection), local validation without a call,
batching at 100, repeated keys, unicode and very large values stored exactly, and the other modes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.client import PropertyProblem, VendorRejected
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.writer import MAX_VALUE_CHARS, BatchWriter
from connectors.testing import read_all
from sandbox.tls import SandboxCA
from schemas.connector import OutcomeStatus, ReadMode, StreamState, WriteMode
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
UPSERT = WriteMode.UPSERT


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 20, "companies": 5})


def _contacts(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"email": f"{tag}-{i}@example.com", "firstname": f"F{i}", "lead_score": i} for i in range(n)]


def _stored(served: Served, obj: str = "contacts") -> dict[str, dict[str, Any]]:
    return {
        str(r.data.get("email") or r.id): dict(r.data) for r in served.hs.store.dump(obj) if not r.deleted
    }


def test_100_records_with_7_bad_write_93_in_two_calls(served: Served, connect: Connect) -> None:
    records = _contacts(100, "batch")
    bad = {
        3: ("email", "not-an-email-3", "INVALID_EMAIL"),
        17: ("email", "Broken@Mail", "INVALID_EMAIL"),  # HubSpot quotes it lower-cased
        29: ("email", "x@y", "INVALID_EMAIL"),
        41: ("email", "two@@example.com", "INVALID_EMAIL"),
        58: ("no_such_prop", "1", "PROPERTY_DOESNT_EXIST"),
        77: ("no_such_prop", "2", "PROPERTY_DOESNT_EXIST"),
        96: ("lead_score", "many", "INVALID_NUMBER"),
    }
    for i, (name, value, _) in bad.items():
        records[i][name] = value
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="email")
    assert [o.index for o in res.outcomes] == list(range(100))
    assert {o.index: o.error_code for o in res.failed} == {i: code for i, (_, _, code) in bad.items()}
    assert res.counts()["created"] == 93
    assert res.calls == 2  # the rejected batch, then the 93 good ones
    stored = _stored(served)
    assert all(records[i]["email"] in stored for i in range(100) if i not in bad)
    assert not any(str(records[i]["email"]).lower() in stored for i in bad)
    for o in res.failed:  # messages name properties and codes, never the rejected values
        assert o.error_message is not None and "@" not in o.error_message and "many" not in o.error_message


def test_an_unexplained_rejection_is_bisected(served: Served, connect: Connect) -> None:
    taken = served.hs.store.get("contacts", "1")
    assert taken is not None
    records = [{"external_id": f"bisect-{i}", "email": f"bisect-{i}@example.com"} for i in range(100)]
    records[62]["email"] = taken.data["email"]  # 409: the e-mail belongs to another contact
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="external_id")
    assert [o.ok for o in res.outcomes] == [i != 62 for i in range(100)]
    assert res.outcomes[62].error_code == "CONFLICT"
    assert res.calls <= 2 * math.ceil(math.log2(100)) + 1  # measured: 13


def test_values_longer_than_hubspot_holds_fail_locally(served: Served, connect: Connect) -> None:
    records = _contacts(100, "long")
    too_long = {5: "x" * (MAX_VALUE_CHARS + 1), 50: "y" * 70_000, 99: "z" * 2_000_000}
    for i, value in too_long.items():
        records[i]["firstname"] = value
    records[7]["firstname"] = "w" * MAX_VALUE_CHARS  # at the limit: HubSpot stores it
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="email")
    assert {o.index: o.error_code for o in res.failed} == dict.fromkeys(too_long, "INVALID_LONG_STRING")
    assert res.calls == 1 and res.counts()["created"] == 97  # the refused three cost no call
    assert _stored(served)["long-7@example.com"]["firstname"] == "w" * MAX_VALUE_CHARS
    assert all(o.error_message == "firstname: value cannot be sent to HubSpot" for o in res.failed)


class _Portal:
    """A HubSpot batch upsert by e-mail that refuses, as one 400, every batch holding an input whose
    ``firstname`` starts with "bad" — with a problem per bad input that names the property but not
    the value (the shape a problem HubSpot does not quote takes), and ``extra`` problems of its own."""

    def __init__(self, extra: tuple[PropertyProblem, ...] = ()) -> None:
        self.calls = 0
        self.resends = 0  # HubSpotClient's count of resends after a lost answer: never here
        self.extra = extra
        self.stored: dict[str, dict[str, Any]] = {}

    def batch(self, object_type: str, verb: str, inputs: list[dict[str, Any]]) -> tuple[int, Any]:
        self.calls += 1
        problems = [
            PropertyProblem("firstname", "FIRSTNAME_REFUSED", "This value is not allowed.")
            for i in inputs
            if str(i["properties"].get("firstname", "")).startswith("bad")
        ]
        if problems:
            problems += [p for p in self.extra if any(p.name in i["properties"] for i in inputs)]
            raise VendorRejected("rejected", status=400, category="VALIDATION_ERROR", problems=problems)
        results = []
        for i in inputs:
            new = i["id"] not in self.stored
            self.stored[i["id"]] = i["properties"]
            results.append({"id": str(len(self.stored)), "new": new, "properties": {"email": i["id"]}})
        return 200, {"status": "COMPLETE", "results": results}


def _write(portal: _Portal, records: list[dict[str, Any]]) -> Any:
    writer = BatchWriter(portal, HubSpotConfig())  # type: ignore[arg-type]  # the client's batch() only
    return writer.write_batch("contacts", records, UPSERT, external_id="email")


def test_an_unquoted_problem_fails_the_only_input_with_a_value_for_its_property() -> None:
    records: list[dict[str, Any]] = [{"email": f"u{i}@example.com"} for i in range(100)]
    records[40]["firstname"] = "bad name"
    records[41]["firstname"] = ""  # clears the property: no value HubSpot could refuse
    portal = _Portal()
    res = _write(portal, records)
    assert {o.index: o.error_code for o in res.failed} == {40: "FIRSTNAME_REFUSED"}
    assert res.calls == portal.calls == 2  # the rejected batch, then the 99 others
    assert len(portal.stored) == 99


def test_unquoted_problems_bisect_only_the_inputs_carrying_their_property() -> None:
    records: list[dict[str, Any]] = [{"email": f"c{i}@example.com"} for i in range(100)]
    for i in range(0, 100, 10):  # ten inputs carry a first name, two of them bad
        records[i]["firstname"] = "bad" if i in (30, 70) else f"ok {i}"
    portal = _Portal()
    res = _write(portal, records)
    assert [o.ok for o in res.outcomes] == [i not in (30, 70) for i in range(100)]
    assert {o.error_code for o in res.failed} == {"FIRSTNAME_REFUSED"}
    # 1 rejected + 1 for the 90 without a first name + bisecting 10 suspects (at most 2 * 10 - 1)
    assert res.calls == portal.calls and res.calls <= 2 + 2 * 10 - 1
    unnarrowed = [{**r, "firstname": r.get("firstname", "fine")} for r in records]  # all carry one
    assert _write(_Portal(), unnarrowed).calls > res.calls


def test_matched_and_unquoted_problems_in_one_rejection() -> None:
    records: list[dict[str, Any]] = [{"email": f"m{i}@example.com", "jobtitle": "t"} for i in range(100)]
    records[10]["firstname"] = "bad one"
    records[60]["no_such_prop"] = "1"
    extra = (
        PropertyProblem("no_such_prop", "PROPERTY_DOESNT_EXIST", 'Property "no_such_prop" does not exist'),
    )
    portal = _Portal(extra)
    res = _write(portal, records)
    assert {o.index: o.error_code for o in res.failed} == {
        10: "FIRSTNAME_REFUSED",
        60: "PROPERTY_DOESNT_EXIST",
    }
    assert res.calls == 2 and len(portal.stored) == 98


def test_101_records_take_two_calls(served: Served, connect: Connect) -> None:
    res = connect(served).write_batch("contacts", _contacts(101, "many"), UPSERT, external_id="email")
    assert res.calls == 2 and res.counts()["created"] == 101


def test_repeated_keys_go_to_later_calls_and_the_last_value_wins(served: Served, connect: Connect) -> None:
    records = [
        {"email": "twice@example.com", "firstname": "First"},
        {"email": "other@example.com"},
        {"email": "TWICE@example.com ", "firstname": "Second"},
    ]
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="email")
    statuses = [o.status for o in res.outcomes]
    assert statuses == [OutcomeStatus.CREATED, OutcomeStatus.CREATED, OutcomeStatus.UPDATED]
    assert res.outcomes[0].id == res.outcomes[2].id and res.calls == 2
    assert _stored(served)["twice@example.com"]["firstname"] == "Second"


def test_unsendable_records_fail_locally_without_a_call(served: Served, connect: Connect) -> None:
    records: list[dict[str, Any]] = [
        {"firstname": "no email"},
        {"email": "", "firstname": "empty email"},
        {"email": "nan@example.com", "lead_score": float("nan")},
        {"email": "inf@example.com", "lead_score": float("inf")},
        {"email": "surrogate@example.com", "firstname": "bad \udc80 text"},
        {"email": "nested@example.com", "firstname": {"a": 1}},
    ]
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="email")
    assert [o.error_code for o in res.outcomes] == [
        "MISSING_ID_PROPERTY",
        "MISSING_ID_PROPERTY",
        "INVALID_NUMBER",
        "INVALID_NUMBER",
        "INVALID_ENCODING",
        "UNSUPPORTED_VALUE",
    ]
    assert res.calls == 0
    assert res.outcomes[4].external_id == "surrogate@example.com"


def test_values_are_sent_as_hubspot_strings(served: Served, connect: Connect) -> None:
    records = [
        {"email": "n1@example.com", "lead_score": 42.0, "firstname": True},
        {"email": "n2@example.com", "lead_score": 1.5, "firstname": None},
    ]
    res = connect(served).write_batch("contacts", records, UPSERT, external_id="email")
    assert all(o.ok for o in res.outcomes)
    stored = _stored(served)
    assert (stored["n1@example.com"]["lead_score"], stored["n1@example.com"]["firstname"]) == ("42", "true")
    assert stored["n2@example.com"]["lead_score"] == "1.5" and "firstname" not in stored["n2@example.com"]


UNICODE = {
    "emoji": "Zoë 👩🏽‍🚀🇪🇺",
    "rtl-override": "abc\u202edcba\u202c",
    "nfc": "Jos\u00e9",
    "nfd": "Jose\u0301",
    "line-separator": "one\u2028two\u2029three",
    "two-megabytes": "x" * (2 * 1024 * 1024 - 1) + "é",
}


def test_unicode_and_a_2mb_value_are_stored_exactly_or_fail_typed(served: Served, connect: Connect) -> None:
    conn = connect(served)
    records = [{"email": f"{name}@example.com", "jobtitle": value} for name, value in UNICODE.items()]
    res = conn.write_batch("contacts", records, UPSERT, external_id="email")
    assert len(res.outcomes) == len(records)
    read = read_all(
        conn, "contacts", StreamState(mode=ReadMode.FULL), page_size=100, fields=["email", "jobtitle"]
    )
    back = {r["email"]: r["jobtitle"] for r in read.records}
    for record, outcome in zip(records, res.outcomes, strict=True):
        if outcome.ok:
            assert back[record["email"]] == record["jobtitle"], f"{record['email']} changed in transit"
        else:
            assert outcome.error_code, "a failure without a code"
    assert back["nfc@example.com"] != back["nfd@example.com"]  # no silent normalisation
    # HubSpot caps a property value at 65,536 characters: the 2 MB one alone is refused, with its code.
    assert [o.ok for o in res.outcomes] == [name != "two-megabytes" for name in UNICODE]
    assert res.outcomes[-1].error_code == "INVALID_LONG_STRING"


def test_create_update_and_delete_modes(served: Served, connect: Connect) -> None:
    conn = connect(served)
    created = conn.write_batch(
        "companies", [{"name": "A co"}, {"name": "B co"}], WriteMode.CREATE, external_id="id"
    )
    assert [o.status for o in created.outcomes] == [OutcomeStatus.CREATED] * 2
    ids = [o.id for o in created.outcomes]
    updates: list[dict[str, Any]] = [{"id": ids[0], "city": "Lyon"}, {"id": "999999", "city": "Nowhere"}]
    updated = conn.write_batch("companies", updates, WriteMode.UPDATE, external_id="id")
    assert [o.status for o in updated.outcomes] == [OutcomeStatus.UPDATED, OutcomeStatus.FAILED]
    assert updated.outcomes[1].error_code == "OBJECT_NOT_FOUND"
    deleted = conn.write_batch(
        "companies", [{"id": ids[1]}, {"name": "no id"}], WriteMode.DELETE, external_id="id"
    )
    assert [o.status for o in deleted.outcomes] == [OutcomeStatus.DELETED, OutcomeStatus.FAILED]
    live = {r.id for r in served.hs.store.dump("companies") if not r.deleted}
    assert ids[0] in live and ids[1] not in live
