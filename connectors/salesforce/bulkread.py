"""Full reads through a Bulk API 2.0 query job, one result set per page, resumable from StreamState.

"Use of ORDER BY in a Bulk 2.0 query disables PKChunking ... and potentially results in query
timeouts" (https://developer.salesforce.com/docs/platform/api-asynch/guide/bulk-api-2-0-troubleshoot-query-timeouts.md),
and PK chunking only splits large jobs (chunks of 100,000 to 250,000 records). So a job is
*ordered* (the REST keyset query, ORDER BY SystemModstamp, Id: the cursor moves with every result
set, and a lost job resumes exactly) unless the read is known to hold more than
``bulk_order_by_max`` records, or an ordered job failed (QUERY_TIMEOUT): then it is *unordered* (no
ORDER BY), rows arrive in no promised order, and the position is kept differently:

* the job reads the rows after the keyset where it began (``state.cursor``/``tie_break``, unchanged
  while the job is paged) with ``SystemModstamp <= bound`` — ``bound`` is the time the job was made
  (``extra["bulk_bound"]``), so a row changed while the job runs is left to the next read (its new
  stamp is later) instead of being read half-way;
* the largest keyset handed out so far rides in ``extra["bulk_max"]``; when the last result set is
  read, the cursor moves there (every row at or before it has been read) and the job is deleted
  (its results would otherwise be kept for seven days:
  https://developer.salesforce.com/docs/atlas.en-us.228.0.api_bulk_v2.meta/api_bulk_v2/bulk_api_2_limits.htm).

A job the org refuses to create (``REFUSALS``: the daily query-job limit, an object Bulk does not
support, Bulk disabled), one that fails (e.g. QUERY_TIMEOUT) and one that is lost (an expired
locator, a job deleted by someone else) return None: the caller continues over REST from the
keyset where the job began. A job lost after some of its sets were handed out hands those rows out
again over REST (idempotent upserts; that is the one case a full read repeats rows).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from connectors.salesforce.client import InvalidLocator, NotFound, SalesforceClient
from connectors.salesforce.overlap import Seen
from connectors.salesforce.reading import BULK_KEYS, Overlap, batch_rows, key_text, parse_key, select_soql
from connectors.salesforce.schema import FieldPlan, csv_value
from schemas.connector import Page, StreamState
from schemas.errors import CrmhubError, DataError

__all__ = ["REFUSALS", "OrderedJobFailed", "bulk_page", "forget_job", "wait_for_job"]

# Job-create refusals that REST can still serve: the 24-hour query-job limit (400 LIMIT_EXCEEDED as
# met in production by airbytehq/airbyte source-salesforce; "ExceededQuota" on the Bulk errors page),
# an object Bulk does not support (400 INVALIDENTITY "... is not supported by the Bulk API"), Bulk
# not enabled (FeatureNotEnabled), and a query Bulk cannot run (API_ERROR, e.g. compound fields):
# https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_0_errors.htm
REFUSALS = frozenset(
    {"LIMIT_EXCEEDED", "ExceededQuota", "INVALIDENTITY", "FeatureNotEnabled", "API_ERROR", "InvalidJob"}
)


class OrderedJobFailed(Exception):
    """An ordered job failed (e.g. QUERY_TIMEOUT: ORDER BY turned PK chunking off); try one unordered."""


def forget_job(client: SalesforceClient, job: str, what: str) -> None:
    """Delete a finished job (results retention); a job already gone is fine."""
    with contextlib.suppress(NotFound, InvalidLocator, DataError):
        client.bulk_delete(job, what=what)


def wait_for_job(
    client: SalesforceClient, job: str, what: str, wait_s: float, sleep: Callable[[float], None]
) -> str | None:
    """JobComplete, "waiting" if still running after ``wait_s``, "failed", or None if it vanished."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    try:
        while True:
            job_state = client.bulk_state(job, what=what)
            if job_state == "JobComplete":
                return job_state
            if job_state in ("Failed", "Aborted"):
                forget_job(client, job, what)
                return "failed"
            if time.monotonic() + delay > deadline:
                return "waiting"
            sleep(delay)
            delay = min(delay * 2, 2.0)
    except (NotFound, InvalidLocator):
        return None


def bulk_page(
    client: SalesforceClient,
    sobject: str,
    plan: FieldPlan,
    state: StreamState,
    page_size: int,
    *,
    wait_s: float,
    bound: str,
    ordered: bool,
    overlap: Overlap | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Page | None:
    """The next Bulk API 2.0 result set after ``state``; None if Bulk cannot serve it (caller uses REST).

    Creates the job on the first page (``bound``: a REST dateTime, normally now), waits up to
    ``wait_s`` for it (an empty page with ``has_more`` if it is still running), then returns
    ``page_size`` rows per call by locator. An ordered job that fails raises :class:`OrderedJobFailed`.
    """
    calls = client.calls
    extra = dict(state.extra)
    job = extra.get("bulk_job")
    what = f"bulk query {sobject}"
    if job is None:
        soql = select_soql(
            sobject, plan, state, window_end=None if ordered else bound, limit=None, ordered=ordered
        )
        try:
            job = client.bulk_create(soql, what=what)
        except CrmhubError as err:
            if isinstance(err, DataError) and err.code in REFUSALS:
                return None
            raise
        extra.update(bulk_job=job, bulk_bound=bound)
        extra.pop("bulk_ready", None)
    if extra.get("bulk_ready") != "1":
        status = wait_for_job(client, job, what, wait_s, sleep)
        if status == "failed" and ordered:
            raise OrderedJobFailed(job)
        if status in (None, "failed"):
            return None
        if status == "waiting":
            return Page([], state.model_copy(update={"extra": extra}), True, calls=client.calls - calls)
        extra["bulk_ready"] = "1"
    try:
        res = client.bulk_results(job, state.page_token, page_size, what=what)
    except (NotFound, InvalidLocator):
        return None
    types = plan.types

    def convert(name: str, value: Any) -> Any:
        return csv_value(value, types.get(name, "string")) if isinstance(value, str) else value

    seen = (Seen.load(extra) or Seen()) if overlap is not None else None
    batch = batch_rows(res.rows, plan, convert, seen=seen)
    changes: dict[str, Any] = {"page_token": res.next_locator}
    top = batch.last if ordered else parse_key(extra.get("bulk_max"))
    if not ordered and batch.top is not None and (top is None or batch.top > top):
        top = batch.top
    if ordered and top is not None:
        changes.update(cursor=key_text(top[0]), tie_break=top[1])  # rows in keyset order
    elif top is not None:
        extra["bulk_max"] = f"{top[0]}|{top[1]}"
    if seen is not None and overlap is not None and top is not None:
        seen.prune(top[0], overlap.window_ms, overlap.max_ids)
        extra.update(seen.dump())
    if res.next_locator is None:
        forget_job(client, job, what)
        if top is not None:
            changes.update(cursor=key_text(top[0]), tie_break=top[1])
        extra = {k: v for k, v in extra.items() if k not in BULK_KEYS}
    changes["extra"] = extra
    return Page(
        batch.records,
        state.model_copy(update=changes),
        res.next_locator is not None,
        batch.deleted_ids,
        calls=client.calls - calls,
        merged_into=batch.merged_into,
    )
