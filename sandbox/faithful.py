"""One switch for the vendor-faithfulness *fault* rules of a running sandbox (issue 13).

The rules that describe how the vendors always behave are always on (docs/VENDOR-FAITHFULNESS.md:
HubSpot merges with a new id, `date` properties refusing a time of day, no rate-limit headers on
search, no ``Retry-After`` on 429; Salesforce short query batches, merges with ``MasterRecordId``,
the recycle bin's 15 days, Bulk 2.0 limits). The rules reported from production but not seen on
every portal or org are faults, off by default; :func:`turn_on` turns them all on at once, as the
contract suite does for HubSpot, so the chaos suites and the benchmarks re-prove their rows under
them:

* HubSpot (:class:`sandbox.hubspot.quirks.Quirks`): search hits of records archived within the last
  hour stay in the index, so pages come back short or empty while ``paging.next.after`` is set;
  list cursors are opaque URL-encoded tokens; batch create answers 200, not 201. ``Retry-After``
  stays off on the rate limiter's 429s (HubSpot documents none).
* Salesforce (:mod:`sandbox.salesforce.latecommit`): with ``late_every`` > 0, every ``late_every``-th
  write of the Python handle (and of the control API) commits ``late_delay_ms`` later with its
  original ``SystemModstamp``. Off unless asked for: a test that writes and then reads in one breath
  makes claims no real org would honour while a transaction is open, so only phases written for
  late commits turn it on (:meth:`LateCommits.mode` commits what is held when the phase ends).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sandbox.hubspot.quirks import Quirks
from sandbox.runtime import RunningSandbox

__all__ = ["HUBSPOT_FAULTS", "faithful", "is_on", "turn_off", "turn_on"]

HUBSPOT_FAULTS = Quirks(
    stale_search_hits_s=3600.0, encoded_list_cursors=True, batch_create_status=200, retry_after_header=False
)
"""HubSpot's switches with every production fault on (as tests/connectors/test_hubspot_contract.py)."""


def turn_on(sb: RunningSandbox, *, late_every: int = 0, late_delay_ms: int = 1_500) -> None:
    """Turn every fault rule of ``sb`` on (Salesforce late commits only with ``late_every`` > 0)."""
    hs: Any = sb.hubspot
    sf: Any = sb.salesforce
    hs.quirks = replace(HUBSPOT_FAULTS)
    sf.late.every, sf.late.delay_ms = late_every, late_delay_ms


def turn_off(sb: RunningSandbox) -> int:
    """Back to the defaults (the happy path); commits every held Salesforce write, returns how many."""
    hs: Any = sb.hubspot
    sf: Any = sb.salesforce
    hs.quirks = Quirks()
    sf.late.every = 0
    return int(sf.late.commit_all())


def is_on(sb: RunningSandbox) -> bool:
    """Whether the HubSpot fault rules of ``sb`` are those of :func:`turn_on`."""
    hs: Any = sb.hubspot
    return bool(hs.quirks == HUBSPOT_FAULTS)


@contextlib.contextmanager
def faithful(
    sb: RunningSandbox, *, late_every: int = 0, late_delay_ms: int = 1_500
) -> Iterator[RunningSandbox]:
    """:func:`turn_on` for a block, :func:`turn_off` at its end."""
    turn_on(sb, late_every=late_every, late_delay_ms=late_delay_ms)
    try:
        yield sb
    finally:
        turn_off(sb)
