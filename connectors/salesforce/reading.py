"""Page-bounded reads: REST keyset pages and Bulk API 2.0 result sets, both resumable from StreamState.

Position is always the keyset ``(SystemModstamp, Id)`` of the last row handed out
(``state.cursor``, ``state.tie_break``)::

    WHERE (SystemModstamp > :t OR (SystemModstamp = :t AND Id > :id)) ORDER BY SystemModstamp, Id LIMIT n

so records sharing one timestamp across a page boundary are neither skipped nor repeated, and
nothing depends on a server-side cursor surviving between calls. Incremental reads use
``queryAll`` (deleted rows come back with ``IsDeleted = true`` → ``Page.deleted_ids``); full reads
use ``query`` (live rows only). Because a record's SystemModstamp moves forward when it changes, a
record modified during a full read is read again later in the same read, and the final state of a
full read is a valid incremental starting point.

A Bulk job (full reads above ``bulk_threshold``) runs the same ordered query without LIMIT; its id
and result locator ride in the state (``extra["bulk_job"]``, ``page_token``), next to the keyset
of the last row. If the job is lost (expired locator, deleted or failed job) the read continues
over REST from that keyset — nothing is lost or repeated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.salesforce.client import InvalidLocator, NotFound, SalesforceClient
from connectors.salesforce.schema import CURSOR_FIELD, FieldPlan, csv_value, rest_datetime
from connectors.salesforce.soql import ident, literal, parse_datetime, quote
from schemas.connector import Page, ReadMode, Record, StreamState
from schemas.errors import ConfigError, TransientError

__all__ = ["Batch", "bulk_page", "counted_page", "rest_page", "select_soql"]

_ID_RE = re.compile(r"^[A-Za-z0-9]{15,18}$")
_BULK_KEYS = ("bulk_job", "bulk_ready")


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of one page turned into records, deleted ids and the keyset of the last row."""

    records: list[Record]
    deleted_ids: list[str]
    last: tuple[str, str] | None


def _datetime_literal(text: str) -> str | None:
    try:
        return literal(parse_datetime(text))
    except ValueError:
        return None


def _keyset(state: StreamState, window_end: str | None) -> list[str]:
    parts: list[str] = []
    if state.cursor:
        t = _datetime_literal(state.cursor)
        if t is None:
            raise ConfigError("state.cursor is not a Salesforce dateTime")
        if state.tie_break:
            if not _ID_RE.match(state.tie_break):
                raise ConfigError("state.tie_break is not a Salesforce id")
            tie = quote(state.tie_break)
            parts.append(f"({CURSOR_FIELD} > {t} OR ({CURSOR_FIELD} = {t} AND Id > {tie}))")
        else:
            parts.append(f"{CURSOR_FIELD} >= {t}")
    if window_end:
        end = _datetime_literal(window_end)
        if end is None:
            raise ConfigError("state.window_end is not a Salesforce dateTime")
        parts.append(f"{CURSOR_FIELD} <= {end}")
    return parts


def select_soql(
    sobject: str, plan: FieldPlan, state: StreamState, *, window_end: str | None, limit: int | None
) -> str:
    """The keyset query after ``state`` (see module docstring); identifiers come from describe."""
    where = _keyset(state, window_end)
    # Identifiers are describe names re-checked by ident(); values only through soql.literal/quote.
    names = ", ".join(ident(n) for n in plan.select)
    soql = f"SELECT {names} FROM {ident(sobject)}"  # noqa: S608 - SOQL; names and object come from describe() via ident()
    if where:
        soql += " WHERE " + " AND ".join(where)
    soql += f" ORDER BY {CURSOR_FIELD} ASC, Id ASC"
    if limit is not None:
        soql += f" LIMIT {limit}"
    return soql


def _convert_row(
    row: Mapping[str, Any], stamp: str, plan: FieldPlan, convert: Callable[[str, Any], Any]
) -> tuple[str, bool, Record] | None:
    try:
        is_deleted = convert("IsDeleted", row.get("IsDeleted")) is True
        return rest_datetime(stamp), is_deleted, {name: convert(name, row.get(name)) for name in plan.output}
    except ValueError:
        return None


def _batch(rows: Sequence[Mapping[str, Any]], plan: FieldPlan, convert: Callable[[str, Any], Any]) -> Batch:
    records: list[Record] = []
    deleted: list[str] = []
    last: tuple[str, str] | None = None
    for row in rows:
        rid, stamp = row.get("Id"), row.get(CURSOR_FIELD)
        if not isinstance(rid, str) or not isinstance(stamp, str):
            raise TransientError(
                "Salesforce query: row without Id or SystemModstamp", code="MALFORMED_RESPONSE"
            )
        converted = _convert_row(row, stamp, plan, convert)
        if converted is None:
            # (Raised outside the except block: the ValueError's text would quote the value.)
            raise TransientError("Salesforce query: a value does not fit its type", code="MALFORMED_RESPONSE")
        stamp, is_deleted, record = converted
        last = (stamp, rid)
        if is_deleted:
            deleted.append(rid)
            continue
        record[CURSOR_FIELD] = stamp
        records.append(record)
    return Batch(records, deleted, last)


def _next_state(state: StreamState, batch: Batch, **changes: Any) -> StreamState:
    if batch.last is not None:
        changes.setdefault("cursor", batch.last[0])
        changes.setdefault("tie_break", batch.last[1])
    return state.model_copy(update=changes)


def rest_page(
    client: SalesforceClient,
    sobject: str,
    plan: FieldPlan,
    state: StreamState,
    page_size: int,
    *,
    window_end: str | None,
    extra: Mapping[str, str],
    limit: bool = True,
) -> tuple[Page, int]:
    """Up to ``page_size`` rows after ``state`` over REST (query / queryAll, following batches), and
    the query's ``totalSize``: every row after ``state`` when ``limit`` is False (no LIMIT clause),
    else at most ``page_size``."""
    calls = client.calls
    deletes = state.mode is ReadMode.INCREMENTAL and state.include_deleted
    soql = select_soql(sobject, plan, state, window_end=window_end, limit=page_size if limit else None)
    what = f"{'queryAll' if deletes else 'query'} {sobject}"
    res = client.query(soql, include_deleted=deletes, batch_size=page_size, what=what)
    total = res.total
    rows = list(res.records)
    cut_short = False
    while res.next_url is not None and len(rows) < page_size:
        try:
            res = client.query_more(res.next_url, what=what)
        except InvalidLocator:
            cut_short = True  # the locator expired: the next page carries on from the last row's keyset
            break
        rows.extend(res.records)
    rows = rows[:page_size]
    batch = _batch(rows, plan, lambda _name, value: value)
    # With LIMIT, a full page may be the last one (the next query answers empty); without, the
    # query's totalSize says whether rows are left.
    has_more = cut_short or (len(rows) == page_size if limit else total > len(rows))
    next_state = _next_state(
        state,
        batch,
        page_token=None,
        window_end=window_end if has_more else None,
        extra={k: v for k, v in extra.items() if k not in _BULK_KEYS},
    )
    return Page(batch.records, next_state, has_more, batch.deleted_ids, calls=client.calls - calls), total


def counted_page(
    client: SalesforceClient, sobject: str, plan: FieldPlan, state: StreamState, page_size: int
) -> tuple[Page, int]:
    """The first ``page_size`` rows of a full read and how many rows the read has in all.

    The query has no LIMIT, so its ``totalSize`` counts every row after ``state``: the caller picks
    REST or Bulk from it without a ``SELECT COUNT()`` of its own (one call fewer per full read). The
    query locator it leaves open is never used and expires on the server.
    """
    return rest_page(client, sobject, plan, state, page_size, window_end=None, extra=state.extra, limit=False)


def bulk_page(
    client: SalesforceClient,
    sobject: str,
    plan: FieldPlan,
    state: StreamState,
    page_size: int,
    *,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Page | None:
    """The next Bulk API 2.0 result set after ``state``; None if the job is gone (caller uses REST).

    Creates the job on the first page, waits up to ``wait_s`` for it (an empty page with
    ``has_more`` if it is still running), then returns ``page_size`` rows per call by locator.
    """
    calls = client.calls
    extra = dict(state.extra)
    job = extra.get("bulk_job")
    what = f"bulk query {sobject}"
    if job is None:
        job = client.bulk_create(select_soql(sobject, plan, state, window_end=None, limit=None), what=what)
        extra["bulk_job"] = job
        extra.pop("bulk_ready", None)
    if extra.get("bulk_ready") != "1":
        deadline = time.monotonic() + wait_s
        delay = 0.1
        try:
            while True:
                job_state = client.bulk_state(job, what=what)
                if job_state == "JobComplete":
                    extra["bulk_ready"] = "1"
                    break
                if job_state in ("Failed", "Aborted"):
                    return None
                if time.monotonic() + delay > deadline:
                    waiting = state.model_copy(update={"extra": extra})
                    return Page([], waiting, True, calls=client.calls - calls)
                sleep(delay)
                delay = min(delay * 2, 2.0)
        except (NotFound, InvalidLocator):
            return None
    try:
        res = client.bulk_results(job, state.page_token, page_size, what=what)
    except (NotFound, InvalidLocator):
        return None
    types = plan.types

    def convert(name: str, value: Any) -> Any:
        return csv_value(value, types.get(name, "string")) if isinstance(value, str) else value

    batch = _batch(res.rows, plan, convert)
    if res.next_locator is None:
        extra = {k: v for k, v in extra.items() if k not in _BULK_KEYS}
    next_state = _next_state(state, batch, page_token=res.next_locator, extra=extra)
    return Page(
        batch.records, next_state, res.next_locator is not None, batch.deleted_ids, calls=client.calls - calls
    )
