"""The org's recycle bin and replication API: merges, the 15-day purge, an emptied bin, getDeleted and
getUpdated — the ways a record disappears without the reader seeing a delete.

Rules emulated (always on, as Salesforce always behaves):

* **Merge** (``merge_records``; up to three records of one type, the master and two losers): the
  losers are deleted into the bin with ``MasterRecordId`` set to the master's id, the master is
  updated (its SystemModstamp moves), children of merged Accounts are re-parented. Losers show in
  ``queryAll`` (``IsDeleted = true``), never in ``query``.
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_merge.htm
  https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/apex_triggers_merge_statements.htm
* **Purge**: a deleted record stays in the bin (and in ``queryAll``) for 15 days, then is gone for
  good; ``empty_bin`` removes it at once (an admin emptying the bin, ``Database.emptyRecycleBin``).
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getdeleted.md (15 days;
  older versions of the page said 30).
* **getDeleted** ``GET /sobjects/{obj}/deleted/?start=&end=``: ``deletedRecords`` (id +
  ``deletedDate``) in the window, ``earliestDateAvailable`` (the deletedDate of the last record
  physically purged — later than your last read means deletes you never saw may be gone) and
  ``latestDateCovered``; **getUpdated** ``GET /sobjects/{obj}/updated/?start=&end=`` answers ``ids``
  and ``latestDateCovered``. Seconds are ignored; ``start`` must precede ``end`` by more than a
  minute and lie within 15 (deleted) / 30 (updated) days, else 400 ``INVALID_REPLICATION_DATE``;
  more than 600,000 ids is 400 ``EXCEEDED_ID_LIMIT``. While a long transaction is open,
  ``latestDateCovered`` is no later than its start ("for safety, use this value for the startDate
  of your next call").
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getdeleted.htm
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getupdated_getupdatedresult.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getupdated.htm

Guesses (no page found): ``earliestDateAvailable`` of an object nothing was ever purged from is the
org's creation time; an ``end`` in the future is accepted and covered up to now; an emptied bin
answers 200 with a later ``earliestDateAvailable`` rather than an INVALID_REPLICATION_DATE error (the
SOAP page says the call fails; the REST page only documents the field).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.fake import BASE_EPOCH_MS
from sandbox.records import RecordRow
from sandbox.salesforce.engine import format_datetime
from sandbox.salesforce.http import ApiError, json_response
from sandbox.salesforce.ids import to_18

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["DELETED_WINDOW_DAYS", "ID_LIMIT", "UPDATED_WINDOW_DAYS", "RecycleBin"]

DAY_MS = 86_400_000
DELETED_WINDOW_DAYS = 15
UPDATED_WINDOW_DAYS = 30
ID_LIMIT = 600_000
ORG_CREATED_MS = BASE_EPOCH_MS - 365 * DAY_MS
_MERGEABLE = frozenset({"Account", "Contact", "Lead"})
_PURGE_EVERY_MS = 60_000


def _minute(ms: int) -> int:
    return ms - ms % 60_000


def _parse_time(text: str | None) -> int | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return int(t.timestamp() * 1000)


class RecycleBin:
    """Deleted records of the org until they are purged, and what has been purged (thread-safe)."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sb = sandbox
        self._lock = threading.Lock()
        self._last_purged: dict[str, int] = {}  # obj -> deletedDate of the last record purged
        self._next_sweep = 0

    # -- Python handle ----------------------------------------------------------------------------

    def merge(
        self, obj: str, master_id: str, loser_ids: Sequence[str], fields: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Merge ``loser_ids`` (one or two) into ``master_id``; returns the re-parented child ids.

        ``fields`` are values that supersede the master's (the MergeRequest's masterRecord fields).
        ValueError for an object that cannot be merged, more than two losers, or a record not live.
        """
        sb = self.sb
        if obj not in _MERGEABLE:
            raise ValueError(f"{obj} records cannot be merged")
        if not 1 <= len(loser_ids) <= 2 or master_id in loser_ids:
            raise ValueError("merge takes one master and one or two other records")
        with sb.write_lock:
            rows = [sb.store.get(obj, to_18(i)) for i in (master_id, *loser_ids)]
            if any(r is None for r in rows):
                raise ValueError("every merged record must exist and not be deleted")
            master = to_18(master_id)
            stamp = sb.store.clock.now_ms()
            for loser in loser_ids:
                sb.store.update(obj, to_18(loser), {"MasterRecordId": master}, modstamp=stamp)
                sb.store.set_deleted(obj, to_18(loser), True, modstamp=stamp)
            sb.update_record(obj, master, dict(fields or {}))
            moved: list[str] = []
            if obj == "Account":
                for loser in loser_ids:
                    for child in sb.store.find("Contact", "AccountId", to_18(loser)):
                        sb.store.update("Contact", child.id, {"AccountId": master}, modstamp=stamp)
                        moved.append(child.id)
            return moved

    def empty(self, obj: str | None = None) -> int:
        """Empty the recycle bin (of ``obj``, or of every object): its records are gone for good."""
        objs = [obj] if obj is not None else self.sb.schema.objects()
        return sum(self._purge(o, None) for o in objs)

    def sweep(self) -> None:
        """Purge records deleted more than 15 days ago (at most once a minute of the org's clock)."""
        now = self.sb.store.clock.now_ms()
        with self._lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + _PURGE_EVERY_MS
        for obj in self.sb.schema.objects():
            self._purge(obj, now - DELETED_WINDOW_DAYS * DAY_MS)

    def _purge(self, obj: str, before_ms: int | None) -> int:
        where, params = (
            ("deleted = 1", []) if before_ms is None else ("deleted = 1 AND modstamp < ?", [before_ms])
        )
        gone = 0
        while True:
            rows = self.sb.store.select(obj, where, params, order_by="modstamp, id", limit=5000)
            if not rows:
                return gone
            for row in rows:
                self.sb.store.purge(obj, row.id)
            gone += len(rows)
            with self._lock:
                self._last_purged[obj] = max(self._last_purged.get(obj, 0), rows[-1].modstamp)

    def earliest_available(self, obj: str) -> int:
        with self._lock:
            return self._last_purged.get(obj, ORG_CREATED_MS)

    # -- REST: getDeleted / getUpdated --------------------------------------------------------------

    def _window(self, request: Request, days: int) -> tuple[str, int, int, int]:
        obj = self.sb.object_name(request.path_params["obj"])
        start = _parse_time(request.query_params.get("start"))
        end = _parse_time(request.query_params.get("end"))
        if start is None or end is None:
            raise ApiError(400, "INVALID_REPLICATION_DATE", "start and end must be ISO 8601 dateTimes")
        start, end = _minute(start), _minute(end)
        now = self.sb.store.clock.now_ms()
        if end - start <= 60_000:
            raise ApiError(
                400, "INVALID_REPLICATION_DATE", "startDate must precede endDate by more than a minute"
            )
        if start < _minute(now) - days * DAY_MS:
            raise ApiError(400, "INVALID_REPLICATION_DATE", f"startDate is more than {days} days ago")
        covered = min(end, _minute(now))
        held = self.sb.late.open_since()
        if held is not None:
            covered = min(covered, _minute(held))
        return obj, start, end, covered

    def _changed(self, request: Request, days: int, *, deleted: bool) -> tuple[str, list[RecordRow], int]:
        """The window's object, its rows (deleted ones or live ones) and ``latestDateCovered``."""
        obj, start, end, covered = self._window(request, days)
        where = f"deleted = {int(deleted)} AND modstamp >= ? AND modstamp < ?"
        rows = self.sb.store.select(obj, where, [start, end], limit=ID_LIMIT + 1)
        if len(rows) > ID_LIMIT:
            raise ApiError(
                400, "EXCEEDED_ID_LIMIT", "Too many ids: choose start and end dates closer together"
            )
        return obj, rows, covered

    async def deleted(self, request: Request) -> Response:
        obj, rows, covered = self._changed(request, DELETED_WINDOW_DAYS, deleted=True)
        body = {
            "deletedRecords": [{"id": r.id, "deletedDate": format_datetime(r.modstamp)} for r in rows],
            "earliestDateAvailable": format_datetime(_minute(self.earliest_available(obj))),
            "latestDateCovered": format_datetime(covered),
        }
        return json_response(body)

    async def updated(self, request: Request) -> Response:
        _, rows, covered = self._changed(request, UPDATED_WINDOW_DAYS, deleted=False)
        return json_response({"ids": [r.id for r in rows], "latestDateCovered": format_datetime(covered)})
