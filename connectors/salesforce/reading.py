"""Page-bounded REST reads, resumable from StreamState (Bulk API 2.0 pages: :mod:`.bulkread`).

Position is always the keyset ``(SystemModstamp, Id)`` of the last row handed out
(``state.cursor``, ``state.tie_break``)::

    WHERE (SystemModstamp > :t OR (SystemModstamp = :t AND Id > :id)) ORDER BY SystemModstamp, Id LIMIT n

so records sharing one timestamp across a page boundary are neither skipped nor repeated, and
nothing depends on a server-side cursor surviving between calls. Incremental reads use
``queryAll`` (deleted rows come back with ``IsDeleted = true`` → ``Page.deleted_ids``; those that lost
a merge carry ``MasterRecordId`` → ``Page.merged_into``); full reads use ``query`` (live rows only).
Because a record's SystemModstamp moves forward when it changes, a record modified during a full
read is read again later in the same read, and the final state of a full read is a valid
incremental starting point.

The overlap window (:mod:`.overlap`): every read remembers the pairs it handed out near the cursor
(``extra["seen"]``); an incremental run re-reads from ``extra["scan"]`` (set by the connector at
the start of the run to ``cursor - overlap_s``) up to the cursor, skipping exactly those pairs, and
only then moves the cursor on. The cursor itself never moves backwards.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.salesforce.client import InvalidLocator, SalesforceClient
from connectors.salesforce.overlap import FLOOR_KEY, Key, Seen
from connectors.salesforce.schema import CURSOR_FIELD, FieldPlan, rest_datetime
from connectors.salesforce.soql import ident, literal, parse_datetime, quote
from schemas.connector import Page, ReadMode, Record, StreamState
from schemas.errors import ConfigError, TransientError

__all__ = [
    "BULK_KEYS",
    "SCAN_KEY",
    "Batch",
    "Overlap",
    "batch_rows",
    "counted_page",
    "key_of",
    "key_text",
    "ms_of",
    "parse_key",
    "rest_page",
    "select_soql",
    "state_at",
]

_ID_RE = re.compile(r"^[A-Za-z0-9]{15,18}$")
BULK_KEYS = ("bulk_job", "bulk_ready", "bulk_bound", "bulk_max")
SCAN_KEY = "scan"


@dataclass(frozen=True, slots=True)
class Overlap:
    """How far back each incremental run re-reads (ms), and how many pairs it may remember."""

    window_ms: int
    max_ids: int


@dataclass
class Batch:
    """Rows of one page turned into records, deleted ids, merge winners and the last row consumed."""

    records: list[Record] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    merged_into: dict[str, str] = field(default_factory=dict)
    last: Key | None = None
    top: Key | None = None  # the largest keyset consumed (Bulk rows come in no order)
    consumed: int = 0


def ms_of(text: str) -> int:
    """A Salesforce dateTime as epoch milliseconds."""
    return round(parse_datetime(text).timestamp() * 1000)


def key_text(ms: int) -> str:
    """Epoch milliseconds as a REST dateTime (``...000+0000``)."""
    return rest_datetime(dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat())


def key_of(state: StreamState) -> Key | None:
    """The state's keyset position; a cursor without tie-break sorts before every row at that time."""
    return None if state.cursor is None else (ms_of(state.cursor), state.tie_break or "")


def parse_key(text: str | None) -> Key | None:
    """A ``"<ms>|<id>"`` position from ``extra`` (None if absent or broken)."""
    if not text:
        return None
    stamp, _, rid = text.partition("|")
    if not stamp.isdigit() or (rid and not _ID_RE.match(rid)):
        return None
    return int(stamp), rid


def state_at(state: StreamState, key: Key) -> StreamState:
    """``state`` positioned at ``key`` (for a query starting there)."""
    return state.model_copy(update={"cursor": key_text(key[0]), "tie_break": key[1] or None})


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
    sobject: str,
    plan: FieldPlan,
    state: StreamState,
    *,
    window_end: str | None,
    limit: int | None,
    ordered: bool = True,
) -> str:
    """The keyset query after ``state`` (see module docstring); identifiers come from describe.

    ``ordered=False`` leaves out ORDER BY (Bulk API 2.0: ORDER BY disables PK chunking).
    """
    where = _keyset(state, window_end)
    # Identifiers are describe names re-checked by ident(); values only through soql.literal/quote.
    names = ", ".join(ident(n) for n in plan.select)
    soql = f"SELECT {names} FROM {ident(sobject)}"  # noqa: S608 - SOQL; names and object come from describe() via ident()
    if where:
        soql += " WHERE " + " AND ".join(where)
    if ordered:
        soql += f" ORDER BY {CURSOR_FIELD} ASC, Id ASC"
    if limit is not None:
        soql += f" LIMIT {limit}"
    return soql


def _convert_row(
    row: Mapping[str, Any], stamp: str, plan: FieldPlan, convert: Callable[[str, Any], Any]
) -> tuple[str, bool, Any, Record] | None:
    try:
        is_deleted = convert("IsDeleted", row.get("IsDeleted")) is True
        master = convert("MasterRecordId", row.get("MasterRecordId"))
        record = {name: convert(name, row.get(name)) for name in plan.output}
        return rest_datetime(stamp), is_deleted, master, record
    except ValueError:
        return None


def batch_rows(
    rows: Sequence[Mapping[str, Any]],
    plan: FieldPlan,
    convert: Callable[[str, Any], Any],
    *,
    seen: Seen | None = None,
    skip_upto: Key | None = None,
    max_records: int | None = None,
) -> Batch:
    """Rows → records/deletes, skipping pairs in ``seen`` at or before ``skip_upto`` (the overlap)
    and remembering what is handed out; stops after ``max_records`` records."""
    out = Batch()
    for row in rows:
        if max_records is not None and len(out.records) + len(out.deleted_ids) >= max_records:
            break
        rid, stamp = row.get("Id"), row.get(CURSOR_FIELD)
        if not isinstance(rid, str) or not isinstance(stamp, str):
            raise TransientError(
                "Salesforce query: row without Id or SystemModstamp", code="MALFORMED_RESPONSE"
            )
        converted = _convert_row(row, stamp, plan, convert)
        if converted is None:
            # (Raised outside the except block: the ValueError's text would quote the value.)
            raise TransientError("Salesforce query: a value does not fit its type", code="MALFORMED_RESPONSE")
        stamp, is_deleted, master, record = converted
        key = (ms_of(stamp), rid)
        out.consumed += 1
        out.last = key
        if out.top is None or key > out.top:
            out.top = key
        if skip_upto is not None and seen is not None and key <= skip_upto and key in seen:
            continue  # handed out by an earlier run: the overlap re-read skips it
        if seen is not None:
            seen.add(key)
        if is_deleted:
            out.deleted_ids.append(rid)
            if isinstance(master, str) and _ID_RE.match(master):
                out.merged_into[rid] = master
            continue
        record[CURSOR_FIELD] = stamp
        out.records.append(record)
    return out


def _after_page(
    state: StreamState,
    extra: dict[str, str],
    batch: Batch,
    seen: Seen | None,
    overlap: Overlap | None,
    high_water: Key | None,
) -> dict[str, Any]:
    """The state changes after ``batch``: the cursor moves on only past the high-water mark."""
    changes: dict[str, Any] = {}
    last = batch.last
    if last is not None and (high_water is None or last > high_water):
        changes["cursor"], changes["tie_break"] = key_text(last[0]), last[1]
        extra.pop(SCAN_KEY, None)
        high_water = last
    elif last is not None:
        extra[SCAN_KEY] = f"{last[0]}|{last[1]}"
    if seen is not None and overlap is not None:
        if high_water is not None:
            seen.prune(high_water[0], overlap.window_ms, overlap.max_ids)
        extra.update(seen.dump())
        extra.pop(FLOOR_KEY, None)  # an older state's floor: no longer honoured (overlap docstring)
    changes["extra"] = extra
    return changes


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
    overlap: Overlap | None = None,
) -> tuple[Page, int]:
    """Up to ``page_size`` records after ``state`` over REST (query / queryAll, following batches of
    whatever size the org sends), and the query's ``totalSize``: every row after ``state`` when
    ``limit`` is False (no LIMIT clause), else at most ``page_size`` plus the pairs the overlap
    re-read will skip."""
    calls = client.calls
    deletes = state.mode is ReadMode.INCREMENTAL and state.include_deleted
    extra = {k: v for k, v in extra.items() if k not in BULK_KEYS}
    seen = Seen.load(extra) if overlap is not None else None
    if overlap is not None and seen is None:
        seen = Seen()
    high_water = key_of(state)
    scan = parse_key(extra.get(SCAN_KEY))
    query_state = state if scan is None or seen is None else state_at(state, scan)
    skip_upto = high_water if scan is not None else None
    query_limit = page_size + (len(seen) if seen is not None and scan is not None else 0)
    soql = select_soql(
        sobject, plan, query_state, window_end=window_end, limit=query_limit if limit else None
    )
    what = f"{'queryAll' if deletes else 'query'} {sobject}"
    res = client.query(soql, include_deleted=deletes, batch_size=page_size, what=what)
    total = res.total
    rows = list(res.records)
    cut_short = False
    while res.next_url is not None and len(rows) < query_limit:
        try:
            res = client.query_more(res.next_url, what=what)
        except InvalidLocator:
            cut_short = True  # the locator expired: the next page carries on from the last row's keyset
            break
        rows.extend(res.records)
    rows = rows[:query_limit]
    batch = batch_rows(
        rows, plan, lambda _name, value: value, seen=seen, skip_upto=skip_upto, max_records=page_size
    )
    # With LIMIT, a full page may be the last one (the next query answers empty); without, the
    # query's totalSize says whether rows are left.
    more_rows = len(rows) == query_limit if limit else total > len(rows)
    has_more = cut_short or batch.consumed < len(rows) or more_rows
    changes = _after_page(state, extra, batch, seen, overlap, high_water)
    changes.update(page_token=None, window_end=window_end if has_more else None)
    if not has_more:
        changes["extra"].pop(SCAN_KEY, None)
    page = Page(
        batch.records,
        state.model_copy(update=changes),
        has_more,
        batch.deleted_ids,
        calls=client.calls - calls,
        merged_into=batch.merged_into,
    )
    return page, total


def counted_page(
    client: SalesforceClient,
    sobject: str,
    plan: FieldPlan,
    state: StreamState,
    page_size: int,
    overlap: Overlap | None = None,
) -> tuple[Page, int]:
    """The first ``page_size`` rows of a full read and how many rows the read has in all.

    The query has no LIMIT, so its ``totalSize`` counts every row after ``state``: the caller picks
    REST or Bulk from it without a ``SELECT COUNT()`` of its own (one call fewer per full read). The
    query locator it leaves open is never used and expires on the server.
    """
    return rest_page(
        client,
        sobject,
        plan,
        state,
        page_size,
        window_end=None,
        extra=state.extra,
        limit=False,
        overlap=overlap,
    )
