"""Fault storm (issue 7, scenario 3): both sandbox CRMs answer the sync's API calls with 30 % 429 +
Retry-After, 10 % 503, 5 % timeouts (a hang, then a cut connection) and 5 % dropped connections
(seeded), and HubSpot's rolling burst window is tightened. The sync completes with destination =
source; no request reaches a vendor before the Retry-After of its last 429 has passed; the calls
that did work (every call minus the injected faults) are at most 1.5 x those of an undisturbed run;
every 429 was an injected one (crmhub never overran the burst window) and no window of the call log
holds more calls than the limit.

Then, with the storm over, a second phase under Salesforce's late commits (issue 13,
:mod:`tests.chaos.late_phase`): every third write of a batch of updates is committed after the first
incremental run has passed it, with its original SystemModstamp, and two contacts are merged into
two others (``MasterRecordId``); a second incremental run must find the late ones. Checked:
destination = source with the updated values (0 lost), every changed record pushed once over both
runs (0 duplicated), the merged losers gone from HubSpot and their masters updated, and the calls
bounded by the pages and batches the changes need.

Every chaos suite runs with HubSpot's production faults on (tests/chaos/conftest.py).

Reduced (CI): 2,000 contacts, 300 updates; full (``CRMHUB_CHAOS_FULL=1``): 10,000, 1,500.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import pytest

from api.demo import _workers
from sandbox import faithful
from sandbox.faults import CallRecord, FaultDecision, FaultInjector, FaultKind, FaultPlan, FaultRule
from sandbox.runtime import RunningSandbox
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from tests.chaos.late_phase import late_commits_and_merges
from tests.chaos.support import size
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync
from workers.client import Connected

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

TENANT = "storm"
RECORDS = size(2_000, 10_000)
UPDATES = size(300, 1_500)  # phase 2: contacts updated under late commits
RETRY_AFTER_S = 1.0
# The vendors' rate-limit answers: HubSpot 429; Salesforce throttles REST with 403 REQUEST_LIMIT_EXCEEDED.
RATE_LIMIT_STATUS = {"hubspot": 429, "salesforce": 403}
BURST = (40, 2.0)  # HubSpot: at most 40 requests per rolling 2 s during the storm
STORM = FaultPlan(
    seed=20,
    rules=[
        FaultRule(endpoint="*oauth*"),  # token refreshes are scenario 4's
        FaultRule(
            endpoint="*",
            rate_limit=0.30,
            retry_after_s=RETRY_AFTER_S,
            server_error=0.10,
            server_error_status=503,
            timeout=0.05,
            timeout_s=2.0,
            drop=0.05,
        ),
    ],
)


class _Counting(FaultInjector):
    """The sandbox's injector, counting the faults it injects."""

    def __init__(self) -> None:
        super().__init__()
        self.injected: Counter[FaultKind] = Counter()

    def decide(self, endpoint: str) -> FaultDecision:
        d = super().decide(endpoint)
        if d.kind is not None:
            self.injected[d.kind] += 1
        return d


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 1}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": RECORDS}}


@pytest.fixture
def sandbox(sandbox: RunningSandbox) -> RunningSandbox:
    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    sf.faults, hs.faults = _Counting(), _Counting()
    return sandbox


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


def _api_calls(vendor: Any) -> list[CallRecord]:
    return [c for c in vendor.calls.all() if "oauth" not in c.endpoint]


async def _full_sync(demo: Connected, settings: Settings) -> None:
    p = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
    assert p.status is SyncStatus.COMPLETED, p
    assert p.counts.pulled == RECORDS and p.counts.pushed == RECORDS and p.counts.failed == 0


def _window(calls: list[CallRecord], limited: int) -> str:
    """What led to a rate limit crmhub caused itself: the calls of the window before each limit."""
    lines = ["a limit was not injected; calls in the window before each limit:"]
    for c in calls:
        if c.status == limited:
            lines += [
                f"  {b.at - c.at:+.3f}s {b.endpoint} {b.status}" for b in calls if 0 <= c.at - b.at <= 2.5
            ]
    return "\n".join(lines[:400])


async def test_sync_completes_through_a_fault_storm_within_budget(settings, sandbox, demo) -> None:
    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    assert faithful.is_on(sandbox)  # HubSpot's production faults (tests/chaos/conftest.py)
    # The storm's burst window applies to the undisturbed run too (the sandbox keeps the window's
    # history across a limit change: tightening it between the runs would count calls made under
    # the old limit against the new one).
    hs.set_burst_limit(*BURST)
    async with _workers(settings):
        await _full_sync(demo, settings)  # undisturbed: the minimum number of calls
        baseline = len(_api_calls(sf)) + len(_api_calls(hs))
        for row in list(hs.store.dump("contacts")):  # an empty destination again
            hs.store.purge("contacts", row.id)
        sf.calls.clear()
        hs.calls.clear()
        # A new run's client knows nothing of the window the last run's client used: let it roll over.
        await asyncio.sleep(BURST[1])

        for vendor in (sf, hs):
            vendor.faults.set_plan(STORM)
        try:
            await _full_sync(demo, settings)
        finally:
            for vendor in (sf, hs):
                vendor.faults.clear()
            hs.set_burst_limit(190, 10.0)

    source = {r["Email"] for r in sf.live_records("Contact")}
    emails = [r["email"] for r in hs.live_records("contacts")]
    assert len(emails) == len(set(emails)) and set(emails) == source

    injected = sf.faults.injected + hs.faults.injected
    assert injected[FaultKind.RATE_LIMIT] and injected[FaultKind.SERVER_ERROR], injected
    assert injected[FaultKind.TIMEOUT] + injected[FaultKind.DROP], injected
    total = len(_api_calls(sf)) + len(_api_calls(hs))
    worked = total - sum(injected.values())
    assert worked <= 1.5 * baseline, f"{worked} calls did work vs {baseline} undisturbed ({injected})"
    print(  # the figures of docs/RELIABILITY.md row 3 (pytest -s)
        f"fault storm: {RECORDS} contacts; {total} calls, {sum(injected.values())} faults injected "
        f"({dict(injected)}); {worked} did work vs {baseline} undisturbed ({worked / baseline:.2f}x)"
    )

    for vendor in (sf, hs):
        limited = RATE_LIMIT_STATUS[vendor.name]
        calls = sorted(_api_calls(vendor), key=lambda c: c.at)
        for before, after in itertools.pairwise(calls):
            if before.status == limited:
                early = before.at + RETRY_AFTER_S - after.at
                assert early <= 0.05, f"{vendor.name}: a request came {early:.2f}s inside Retry-After"
        statuses = Counter(c.status for c in calls)
        assert statuses[limited] == vendor.faults.injected[FaultKind.RATE_LIMIT], _window(calls, limited)

    limit, window = BURST
    times = sorted(c.at for c in _api_calls(hs))
    worst = max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))
    assert worst <= limit, f"{worst} HubSpot calls within {window}s (limit {limit})"

    # Phase 2 (issue 13): late commits and merges after the full runs, the storm over.
    async with _workers(settings):
        line = await late_commits_and_merges(demo, settings, sandbox, TENANT, UPDATES)
    print(f"fault storm, {line}")  # the figures of docs/RELIABILITY.md row 3, phase 2 (pytest -s)
