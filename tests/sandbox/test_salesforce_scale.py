"""Scale check of the Salesforce emulator: 100,000 contacts paged through simple-salesforce."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sandbox.salesforce import SalesforceSandbox
from sandbox.tls import SandboxCA
from tests.sandbox import salesforce_support
from tests.sandbox.salesforce_support import Org, serve

sf_ca = salesforce_support.sf_ca

N = 100_000


@pytest.fixture(scope="module")
def large(sf_ca: SandboxCA) -> Iterator[Org]:
    sb = SalesforceSandbox()
    started = time.perf_counter()
    assert sb.seed({"Account": 1000, "Contact": N}, seed=5) == {"Account": 1000, "Contact": N}
    print(f"\nseeded {N:,} contacts in {time.perf_counter() - started:.2f}s")
    yield from serve(sb, sf_ca)


@pytest.mark.slow
def test_query_all_iter_over_100k_contacts(large: Org) -> None:
    sf = large.client()
    started = time.perf_counter()
    ids = [
        r["Id"]
        for r in sf.query_all_iter("SELECT Id, FirstName, LastName, Email, SystemModstamp FROM Contact")
    ]
    elapsed = time.perf_counter() - started
    print(f"\npaged {len(ids):,} contacts in {elapsed:.2f}s ({len(ids) / elapsed:,.0f} records/s)")
    assert len(ids) == N
    assert len(set(ids)) == N


@pytest.mark.slow
def test_deep_pages_of_2000_are_complete(large: Org) -> None:
    """Deep pages over HTTPS at 100k rows: full 2,000-record pages (keyset cursor). Timing is in
    ``python -m bench sandbox``, not asserted here."""
    sf = large.client()
    soql = (
        "SELECT Id, FirstName, LastName, Email, MailingAddress, SystemModstamp FROM Contact "
        "ORDER BY SystemModstamp, Id"
    )
    url = sf.query(soql)["nextRecordsUrl"]
    s = large.session()
    auth = {"Authorization": f"Bearer {large.token}"}
    timings = []
    for _ in range(25):  # deep pages cost the same as the first (keyset cursor)
        started = time.perf_counter()
        resp = s.get(large.srv.url + url, headers=auth)
        body = resp.content
        timings.append(time.perf_counter() - started)
        assert resp.status_code == 200
        page = resp.json()
        assert len(page["records"]) == 2000
        url = page["nextRecordsUrl"]
    median = sorted(timings)[len(timings) // 2]
    print(
        f"\nmedian page of 2,000 over HTTPS: {median * 1000:.1f} ms "
        f"(min {min(timings) * 1000:.1f}, max {max(timings) * 1000:.1f}; {len(body):,} bytes)"
    )
