"""Page-bounded reads of one HubSpot object: full (list API) and incremental (search API + archive).

Incremental reads never page a search with ``after``, so HubSpot's 10,000-results-per-query cap
never triggers. The position is a keyset ``(cursor, tie_break)`` = (modification time in epoch ms,
record id): every record ordered at or before it has been delivered. One read covers a window that
ends at ``window_end`` (fixed when the read starts, ``search_settle_s`` in the past), so it ends even
while records keep changing; the next read continues from the position it left.

Phases (``StreamState.extra["phase"]``)::

    list     first read (no cursor): page the list API (no search cap, higher rate limit); at the
             end the position becomes (window_end, "") — everything older was listed.
    search   "phase A": search (modified == cursor AND id > tie) OR (cursor < modified <= end),
             sorted by modified ascending, limit L. A full page is complete below its last
             timestamp T: emit those, hold back the records at T, continue from (T, ""). A full page
             that is all one timestamp goes to ``ties``. A page without ``paging.next`` ends the window.
    ties     "phase B": search modified == T AND id > tie sorted by id ascending (keyset on id) until
             exhausted, then back to ``search`` from (T, last id).
    merges   every incremental page reports the ids merged into its records (``hs_merged_object_ids``)
             in ``Page.merged_into`` (and, with ``merges_as_deletes``, in ``Page.deleted_ids``): a
             merge archives nothing, the losers simply stop existing.
    deletes  after the window: page the archived list (limit 100; it cannot be filtered by time)
             and report ids archived in (deleted_after, window_end]. The cost is one call per 100
             archived records of the object (HubSpot keeps them 90 days), so it runs at most once
             per ``archive_scan_interval_s``: a read inside it skips the scan and leaves
             ``deleted_after`` where it was, and the next scan covers the whole gap.

On a connection granted ``crm.export``, a full read or a ``list`` backfill of an object with at
least ``export_threshold`` records reads one HubSpot export instead of paging the list API
(:mod:`connectors.hubspot.exports`); it ends at the same position as the list read would.

A full read (``ReadMode.FULL``) pages the list API the same way and ends at the same position
(``window_end`` fixed on its first page), so an incremental read after it picks up exactly the
changes and archives since — not the whole object again. Records modified in the settle window
just before a read are read again by the next one (an idempotent upsert downstream).

``tie_break`` holds the id zero-padded to 20 digits so that string order is numeric order (states
are compared as strings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.exports import ExportReads, Fallback
from schemas.connector import Page, ReadMode, Record, StreamState
from schemas.errors import ConfigError, TransientError

__all__ = ["ID_PROPERTY", "MODIFIED_PROPERTY", "StreamReader"]

log = logging.getLogger(__name__)

ID_PROPERTY = "hs_object_id"
MERGED_PROPERTY = "hs_merged_object_ids"  # ids merged into a record (see merged_away)
MODIFIED_PROPERTY = {
    "contacts": "lastmodifieddate",
    "companies": "hs_lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}
CUSTOM_MODIFIED = "hs_lastmodifieddate"  # every custom object's modification property
LIST_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_MAX_RESULTS = 10_000  # HubSpot refuses a search page past its 10,000th result
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_ms(value: Any) -> int | None:
    """Epoch ms from HubSpot's ISO-8601 (``2024-01-01T00:00:00.000Z``) or epoch-ms string; None if neither."""
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def to_ms(value: Any) -> int:
    """:func:`parse_ms` for values HubSpot sent: an unparseable one is a (transient) vendor fault."""
    ms = parse_ms(value)
    if ms is None:
        raise TransientError("HubSpot returned an unparseable modification date")
    return ms


def merged_away(records: list[Record], *, keep: bool) -> dict[str, str]:
    """Ids merged into the records of a page (``hs_merged_object_ids``, ";"-separated) → the id of
    the record they now live on; the property is dropped from the records unless ``keep``.

    A merge leaves no archive entry: the losers just stop existing, and the result (a new record
    since HubSpot's "Updated merge functionality for contacts and companies") carries their ids
    (https://developers.hubspot.com/changelog/updated-merge-functionality-for-contacts-and-companies).
    The result is modified at the merge, so the incremental read that returns it reports them.
    """
    out: dict[str, str] = {}
    for rec in records:
        own = str(rec.get("id"))
        raw = rec.get(MERGED_PROPERTY) if keep else rec.pop(MERGED_PROPERTY, None)
        for merged in str(raw or "").split(";"):
            if merged.strip().isdigit() and merged.strip() != own:
                out[merged.strip()] = own
    return out


def _pad(record_id: int) -> str:
    return f"{record_id:020d}"


def _record(raw: dict[str, Any]) -> Record:
    """A flat record: HubSpot's properties (strings or null) plus ``id``."""
    rec: Record = dict(raw.get("properties") or {})
    rec["id"] = raw["id"]
    return rec


def _next_after(body: dict[str, Any]) -> str | None:
    nxt = (body.get("paging") or {}).get("next") or {}
    after = nxt.get("after")
    return str(after) if after not in (None, "") else None


def first_filled_page(
    search: Callable[[dict[str, str]], dict[str, Any]], limit: int
) -> tuple[list[Record], bool]:
    """Page one search query until a page holds records or none follows: (records, more follow).

    HubSpot's search sometimes answers a page short or empty while ``paging.next.after`` is still
    set (reported from production by airbytehq/airbyte PRs #80744/#80745). A short page is used as
    it is (the keyset position moves past its last record, so nothing after it is skipped); an
    empty one is followed by its cursor — asking the same query again would get the same empty page
    forever. Search cursors are offsets that HubSpot refuses past 10,000 results, so at most
    ``10,000 / limit`` pages are asked; a cursor that does not move, or more empty pages than that,
    is a :class:`TransientError` (the read retries later from the same position, losing nothing).
    """
    after: str | None = None
    for _ in range(max(1, SEARCH_MAX_RESULTS // limit)):
        body = search({} if after is None else {"after": after})
        records = [_record(r) for r in _results(body)]
        nxt = _next_after(body)
        if records or nxt is None:
            return records, nxt is not None
        if nxt == after:
            raise TransientError("HubSpot search: an empty page whose next cursor does not advance")
        after = nxt
    raise TransientError(f"HubSpot search: {SEARCH_MAX_RESULTS:,} results' worth of empty pages")


def _results(body: dict[str, Any]) -> list[dict[str, Any]]:
    results = body.get("results")
    if not isinstance(results, list):
        raise TransientError("HubSpot answer has no results list")
    return results


class StreamReader:
    """Implements :meth:`Connector.read_page` for HubSpot (see the module docstring)."""

    def __init__(self, client: HubSpotClient, config: HubSpotConfig) -> None:
        self.client = client
        self.config = config
        self.exports = ExportReads(client, config)

    def close(self) -> None:
        self.exports.close()

    def id_page(self, stream: str, after: str | None, limit: int) -> tuple[list[str], str | None]:
        """One page of live ids through the list API (only ``hs_object_id`` asked for, 100 a call).

        The list API, not search: search's index lags writes, and a record created a moment ago
        must not look deleted to a reconciliation."""
        body = self.client.list_page(
            stream, limit=max(1, min(limit, LIST_LIMIT)), after=after, properties=[ID_PROPERTY]
        )
        return [str(r["id"]) for r in _results(body)], _next_after(body)

    def read_page(self, stream: str, state: StreamState, page_size: int, fields: Sequence[str]) -> Page:
        # A custom object is addressed by its objectTypeId "2-…" (connectors.hubspot.objects).
        modified = MODIFIED_PROPERTY.get(stream) or (CUSTOM_MODIFIED if stream.startswith("2-") else None)
        if modified is None:
            raise ConfigError(f"unknown HubSpot stream {stream!r}; use one of {sorted(MODIFIED_PROPERTY)}")
        if page_size < 1:
            raise ConfigError("page_size must be at least 1")
        incremental = state.mode is ReadMode.INCREMENTAL
        extra = [MERGED_PROPERTY] if incremental else []
        props = list(dict.fromkeys([*fields, ID_PROPERTY, modified, *extra]))
        calls_before = self.client.calls
        limit = max(1, min(page_size, self.config.page_size))
        page = _Read(self, stream, modified, props, limit, page_size).run(state)
        merged = merged_away(page.records, keep=MERGED_PROPERTY in fields) if incremental else {}
        deleted = page.deleted_ids
        if merged and self.config.merges_as_deletes:
            deleted = [*deleted, *(i for i in merged if i not in set(deleted))]
        return Page(
            page.records,
            page.next_state,
            page.has_more,
            deleted,
            self.client.calls - calls_before,
            merged_into=merged,
        )


class _Read:
    """One read_page call: the stream's names and limits, and the phase handlers."""

    def __init__(
        self, reader: StreamReader, stream: str, modified: str, props: list[str], limit: int, asked: int
    ) -> None:
        self.client = reader.client
        self.config = reader.config
        self.exports = reader.exports
        self.asked = asked  # page size the caller asked for: an export page is not bound by the API's
        self.stream = stream
        self.modified = modified
        self.props = props
        self.limit = limit

    def run(self, state: StreamState) -> Page:
        if state.mode is ReadMode.FULL:
            return self.full(state)
        phase = state.extra.get("phase")
        if phase is None:
            state = self.start(state)
            phase = state.extra["phase"]
        handler = {"list": self.backfill, "search": self.search, "ties": self.ties, "deletes": self.deletes}
        if phase not in handler:
            raise ConfigError(f"unknown HubSpot read phase {phase!r} in the stream state")
        return handler[phase](state)

    # -- full -------------------------------------------------------------------------------------

    def list_page(self, after: str | None) -> tuple[list[Record], str | None]:
        body = self.client.list_page(
            self.stream, limit=min(self.limit, LIST_LIMIT), after=after, properties=self.props
        )
        return [_record(r) for r in _results(body)], _next_after(body)

    def full(self, state: StreamState) -> Page:
        if state.page_token is None and state.window_end is None:
            # A new full read: everything modified up to ``window_end`` is listed, so that is where
            # the next (incremental) read starts, with deletes archived after it.
            state = state.model_copy(update={"window_end": str(self.settled_now())})
        # a read begun before full reads fixed their window has none to end at
        return self.listed(state, windowed=state.window_end is not None)

    # -- incremental ------------------------------------------------------------------------------

    def settled_now(self) -> int:
        """Epoch ms ``search_settle_s`` ago: changes up to then are in HubSpot's search index."""
        return int(time.time() * 1000) - int(self.config.search_settle_s * 1000)

    def start(self, state: StreamState) -> StreamState:
        """Fix the window of a new read; no cursor yet → backfill through the list API."""
        if state.cursor is not None and not state.cursor.isdigit():
            ms = parse_ms(state.cursor)
            if ms is None:
                raise ConfigError("a HubSpot cursor is epoch milliseconds or an ISO-8601 time")
            state = state.model_copy(update={"cursor": str(ms)})
        end = self.settled_now()
        extra = dict(state.extra)
        extra["phase"] = "list" if state.cursor is None else "search"
        if state.cursor is not None:
            extra.setdefault("deleted_after", state.cursor)
        return state.model_copy(update={"window_end": str(end), "extra": extra, "page_token": None})

    def export(self, state: StreamState) -> Page | None:
        """A page of the read through an export (:mod:`connectors.hubspot.exports`), or None when
        the list API serves this read. Ends like the list read: at ``window_end``."""
        try:
            if not self.exports.in_progress(state):
                if not self.exports.wanted(self.stream, state):
                    return None
                state = self.exports.start(self.stream, self.props, state)
            records, state, ended = self.exports.page(self.stream, state, self.asked)
        except Fallback as exc:
            log.warning("%s: reading through the list API instead of an export: %s", self.stream, exc)
            return Page([], self.exports.declined(state, exc.reason), True)
        if not ended:
            return Page(records, state, True)
        return self.last_listed(records, state)

    def backfill(self, state: StreamState) -> Page:
        return self.listed(state)

    def listed(self, state: StreamState, *, windowed: bool = True) -> Page:
        """A page of a read that lists everything (through an export, else the list API); its last
        page ends the read at ``window_end`` (not ``windowed``: ends it with the state as it was, but
        for the page token)."""
        exported = self.export(state)
        if exported is not None:
            return exported
        records, after = self.list_page(state.page_token)
        if after is not None:
            return Page(records, state.model_copy(update={"page_token": after}), True)
        if not windowed:
            return Page(records, state.model_copy(update={"page_token": None}), False)
        return self.last_listed(records, state)

    def last_listed(self, records: list[Record], state: StreamState) -> Page:
        """The last page of a listing read: the next read starts at its ``window_end``, with the
        deletes archived after it."""
        end = state.window_end or "0"
        return Page(records, self.finished(state, end, "", deleted_after=end), False)

    def finished(
        self, state: StreamState, cursor: str, tie: str, *, deleted_after: str | None
    ) -> StreamState:
        """The state a completed read leaves for the next one."""
        state = self.exports.finished_extra(state)
        extra = {k: v for k, v in state.extra.items() if k not in ("phase", "deleted_after")}
        if deleted_after is not None:
            extra["deleted_after"] = deleted_after
        return state.model_copy(
            update={
                "cursor": cursor,
                "tie_break": tie,
                "page_token": None,
                "window_end": None,
                "extra": extra,
            }
        )

    def with_phase(self, state: StreamState, phase: str, **update: Any) -> StreamState:
        return state.model_copy(update={**update, "extra": {**state.extra, "phase": phase}})

    def _search(self, filter_groups: list[list[dict[str, str]]], sort: str) -> tuple[list[Record], bool]:
        """The first non-empty page of one keyset query, and whether HubSpot says more follow.

        HubSpot answers some pages empty while ``paging.next.after`` is still set (see
        :func:`first_filled_page`): those are followed by their cursor, never re-asked."""
        limit = min(self.limit, SEARCH_LIMIT)
        request: dict[str, Any] = {
            "filterGroups": [{"filters": g} for g in filter_groups],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": self.props,
            "limit": limit,
        }
        return first_filled_page(lambda after: self.client.search(self.stream, {**request, **after}), limit)

    def _f(self, prop: str, op: str, value: int) -> dict[str, str]:
        return {"propertyName": prop, "operator": op, "value": str(value)}

    def search(self, state: StreamState) -> Page:
        """Phase A: the window from the keyset position, by modification time."""
        pos, tie, end = int(state.cursor or 0), state.tie_break or "", int(state.window_end or 0)
        m = self.modified
        if tie:
            groups = [
                [self._f(m, "EQ", pos), self._f(ID_PROPERTY, "GT", int(tie))],
                [self._f(m, "GT", pos), self._f(m, "LTE", end)],
            ]
        else:
            groups = [[self._f(m, "GTE", pos), self._f(m, "LTE", end)]]
        records, more = self._search(groups, m)
        if not more:  # the window is exhausted: every record in it is on this page
            if records:
                last = max(to_ms(r[m]) for r in records)
                top = max(int(r["id"]) for r in records if to_ms(r[m]) == last)
                tie = max(tie, _pad(top)) if last == pos else _pad(top)
                pos = last
            return self.window_done(state, records, str(pos), tie)
        stamps = [to_ms(r[m]) for r in records]
        last = max(stamps)
        complete = [r for r, t in zip(records, stamps, strict=True) if t < last]
        if complete:
            return Page(complete, self.with_phase(state, "search", cursor=str(last), tie_break=""), True)
        # A whole page at one timestamp: drain it by id in the same call, so no page is empty.
        start_tie = tie if last == pos else ""
        return self.ties(self.with_phase(state, "ties", cursor=str(last), tie_break=start_tie))

    def ties(self, state: StreamState) -> Page:
        """Phase B: records at exactly ``cursor``, keyset on id."""
        pos, tie = int(state.cursor or 0), state.tie_break or ""
        groups = [[self._f(self.modified, "EQ", pos), self._f(ID_PROPERTY, "GT", int(tie or 0))]]
        records, more = self._search(groups, ID_PROPERTY)
        if records:
            tie = max(tie, _pad(max(int(r["id"]) for r in records)))
        phase = "ties" if more else "search"
        return Page(records, self.with_phase(state, phase, tie_break=tie), True)

    def window_done(self, state: StreamState, records: list[Record], cursor: str, tie: str) -> Page:
        end = state.window_end or cursor
        since = state.extra.get("deleted_after")
        if state.include_deleted and since is not None:
            if self.settled_now() - int(since) < self.config.archive_scan_interval_s * 1000:
                # Scanned lately: the next read scans from the same point, so nothing is lost.
                return Page(records, self.finished(state, cursor, tie, deleted_after=since), False)
            return Page(records, self.with_phase(state, "deletes", cursor=cursor, tie_break=tie), True)
        return Page(records, self.finished(state, cursor, tie, deleted_after=end), False)

    def deletes(self, state: StreamState) -> Page:
        """Archived records with ``archivedAt`` in (deleted_after, window_end], 100 per call."""
        since, end = int(state.extra.get("deleted_after") or 0), int(state.window_end or 0)
        body = self.client.list_page(
            self.stream, limit=LIST_LIMIT, after=state.page_token, properties=[ID_PROPERTY], archived=True
        )
        deleted = [
            str(r["id"])
            for r in _results(body)
            if r.get("archivedAt") and since < to_ms(r["archivedAt"]) <= end
        ]
        after = _next_after(body)
        if after is not None:
            return Page([], state.model_copy(update={"page_token": after}), True, deleted)
        done = self.finished(state, state.cursor or "0", state.tie_break or "", deleted_after=str(end))
        return Page([], done, False, deleted)
