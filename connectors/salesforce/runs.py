"""An incremental *run* — the pages from one finished read to the next — and what its first and last
page do beyond reading.

``extra["run"]`` marks a run in progress (the workflow resumes a run from its checkpoint; a state
without the mark starts a new one). The first page of a run

* sets ``extra["scan"]`` to ``cursor - overlap_s``, where the
  re-read of the overlap window begins (:mod:`.reading`, :mod:`.overlap`) — only if the state
  carries the pairs to skip, so a state from before the window re-reads nothing twice;
* asks :func:`.deletelog.check_delete_log` whether deletes may have been purged unseen since
  ``extra["covered"]`` (else the cursor) and keeps the answer's coverage in ``extra["covering"]``
  (and the purge it reported in ``extra["purge_reported"]``, so one purge is reported once).

The last page (``has_more=False``) drops the run mark and the scan position and moves ``covering``
to ``covered``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.deletelog import check_delete_log
from connectors.salesforce.overlap import SEEN_KEY, Seen
from connectors.salesforce.reading import SCAN_KEY, Overlap, key_of
from schemas.connector import Page, ReadMode, StreamState

__all__ = ["COVERED_KEY", "COVERING_KEY", "REPORTED_KEY", "RUN_KEY", "end_page", "start_run"]

RUN_KEY = "run"
COVERED_KEY = "covered"
COVERING_KEY = "covering"
REPORTED_KEY = "purge_reported"


def start_run(
    client: SalesforceClient,
    sobject: str,
    state: StreamState,
    *,
    overlap: Overlap | None,
    check_deletes: bool,
    now: Callable[[], float],
) -> tuple[StreamState, str | None]:
    """The state to read the first page of a run from, and the reconcile reason (None: nothing missed)."""
    if state.mode is not ReadMode.INCREMENTAL or RUN_KEY in state.extra:
        return state, None
    extra = {**state.extra, RUN_KEY: "1"}
    high_water = key_of(state)
    seen = Seen.load(extra) if SEEN_KEY in extra else None
    if overlap is not None and high_water is not None and seen is not None:
        start = (high_water[0] - overlap.window_ms, "")
        if start < high_water:
            extra[SCAN_KEY] = f"{start[0]}|{start[1]}"
    reason = None
    covered = extra.get(COVERED_KEY)
    base = int(covered) if covered and covered.isdigit() else (None if high_water is None else high_water[0])
    if check_deletes and state.include_deleted and base is not None:
        reported = extra.get(REPORTED_KEY)
        reason, covering, purged = check_delete_log(
            client,
            sobject,
            base,
            now(),
            reported_ms=int(reported) if reported and reported.isdigit() else None,
        )
        if covering is not None:
            extra[COVERING_KEY] = str(covering)
        if reason is not None and purged is not None:
            extra[REPORTED_KEY] = str(purged)
    return state.model_copy(update={"extra": extra}), reason


def end_page(page: Page, reason: str | None) -> Page:
    """``page`` with the run's bookkeeping: the reconcile reason on it, and the run closed at its end."""
    if page.next_state.mode is not ReadMode.INCREMENTAL:
        return page
    extra = dict(page.next_state.extra)
    if page.has_more:
        extra[RUN_KEY] = "1"
    else:
        extra.pop(RUN_KEY, None)
        extra.pop(SCAN_KEY, None)
        covering = extra.pop(COVERING_KEY, None)
        if covering is not None:
            extra[COVERED_KEY] = covering
    return dataclasses.replace(
        page,
        next_state=page.next_state.model_copy(update={"extra": extra}),
        reconcile=reason or page.reconcile,
    )
