"""Scale check: 100,000 seeded contacts paged through hubspot-api-client with raw JSON parsing."""

from __future__ import annotations

import json
import time

import pytest

from sandbox.hubspot import HubSpotSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import hubspot_support

hs_ca = hubspot_support.hs_ca


@pytest.mark.slow
def test_page_100k_contacts_raw(hs_ca: SandboxCA) -> None:
    hs = HubSpotSandbox(burst_limit=None)
    started = time.perf_counter()
    assert hs.seed({"contacts": 100_000}, seed=11) == {"contacts": 100_000}
    seeded = time.perf_counter() - started
    for served in hubspot_support.serve(hs, hs_ca):
        api = served.client().crm.contacts.basic_api
        started = time.perf_counter()
        count, pages, after, last = 0, 0, None, 0
        while True:
            raw = api.get_page(limit=100, after=after, _preload_content=False)
            body = json.loads(raw.data)
            ids = [int(r["id"]) for r in body["results"]]
            assert ids and ids[0] > last  # strictly ascending across pages: no duplicates
            last = ids[-1]
            count += len(ids)
            pages += 1
            nxt = body.get("paging", {}).get("next")
            if nxt is None:
                break
            after = nxt["after"]
        elapsed = time.perf_counter() - started
        print(
            f"\nseeded 100k in {seeded:.2f}s; paged {count} in {pages} pages: {elapsed:.2f}s "
            f"({elapsed / pages * 1000:.1f} ms/page incl. client)"
        )
        assert count == 100_000 and pages == 1000
        del api, raw  # release the client's pooled connection before the server stops
