"""The association stream ``deals/contacts`` by id and listed (connectors.hubspot.pairs) through the
connector and the sandbox over HTTPS: pairs read again by id in one associations batch read per
1,000 deals (a pair the deal no longer has is missing), every live pair listed with a page of deals
(100 a list call) and one associations batch read per page; a purged deal's pairs are not listed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from sandbox.tls import SandboxCA
from schemas.connector import StreamState
from schemas.errors import ConfigError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
STREAM = "deals/contacts"


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"deals": 250, "contacts": 40})


def _associate(served: Served) -> set[tuple[str, str]]:
    """Deal i with contacts i and i+1 (mod 40), the first 10 deals with none; the pairs."""
    deals = sorted((r["id"] for r in served.hs.live_records("deals")), key=int)
    contacts = sorted((r["id"] for r in served.hs.live_records("contacts")), key=int)
    for i, d in enumerate(deals[10:], start=10):
        for c in (contacts[i % 40], contacts[(i + 1) % 40]):
            served.hs.associations.associate("deals", d, "contacts", c, [3])
    return served.hs.associations.pairs("deals", "contacts")


def test_pairs_read_by_id_in_one_associations_read(served: Served, connect: Connect) -> None:
    pairs = sorted(_associate(served))
    assert len(pairs) == 480
    d, c = pairs[0]
    assert served.hs.associations.remove("deals", d, "contacts", c)
    asked = [f"{a}:{b}" for a, b in pairs[:150]]
    hs = connect(served)
    got = hs.read_by_ids(STREAM, asked, ["id", "@deals", "@contacts"])
    assert got.calls == 1  # the 75 deals of the 150 pairs: one batch read (≤ 1,000)
    assert got.missing == [f"{d}:{c}"]
    assert sorted(r["id"] for r in got.records) == sorted(asked[1:])
    first = next(r for r in got.records if r["id"] == asked[1])
    assert first == {"id": asked[1], "@deals": pairs[1][0], "@contacts": pairs[1][1]}
    with pytest.raises(ConfigError, match="<owner id>:<other id>"):
        hs.read_by_ids(STREAM, [d], ["id"])


def test_every_live_pair_is_listed_two_calls_a_page_of_deals(served: Served, connect: Connect) -> None:
    pairs = _associate(served)
    deals = sorted({d for d, _ in pairs}, key=int)
    served.hs.gdpr_delete("deals", deals[0])  # purged: its pairs are not listed
    hs = connect(served)
    ids: list[str] = []
    state, calls, pages = StreamState(), 0, 0
    while True:
        page = hs.list_ids(STREAM, state, 2_000)
        ids, calls, pages, state = ids + page.ids, calls + page.calls, pages + 1, page.next_state
        if not page.has_more:
            break
    assert pages == 3 and calls == 6  # 249 deals: 3 list calls of 100 + 3 associations reads
    assert sorted(ids) == sorted(f"{d}:{c}" for d, c in pairs if d != deals[0])
    assert len(ids) == 478
