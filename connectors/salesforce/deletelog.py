"""Whether the org can still show every delete since the last read, or a reconciliation is needed.

Deleted rows reach an incremental read through ``queryAll`` only while they are in the recycle bin:
15 days, less once an admin empties the bin or the delete log grows past its limit
(https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getdeleted.md). A row that
left the bin before the next read is simply gone — no delete is ever seen. getDeleted says when that
happened: ``earliestDateAvailable`` is the deletion time of the last record physically purged
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/object_ref/sforce_api_calls_getdeleted_getdeletedresult.htm,
"you must resync your data"); later than the time up to which we last looked (``covered``) means
deletes may have been missed.

At the start of each incremental run the connector makes one getDeleted call over the last two
minutes (a window Salesforce accepts — more than a minute, within 15 days — and small: only the
deletes of those two minutes come back) and keeps its ``latestDateCovered`` as the next ``covered``.
A ``covered`` older than the 15-day window is reported whatever getDeleted says (the bin keeps 15
days); the call still gives the next ``covered``.
"""

from __future__ import annotations

import datetime as dt

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.reading import ms_of
from schemas.errors import DataError

__all__ = ["DELETE_LOG_DAYS", "PURGED", "TOO_OLD", "UNAVAILABLE", "check_delete_log"]

DELETE_LOG_DAYS = 15
TOO_OLD = "DELETE_LOG_EXPIRED"  # the last look is older than the bin keeps deletes
PURGED = "DELETE_LOG_PURGED"  # the bin was purged past the last look (emptied, or the 15-day purge)
UNAVAILABLE = "DELETE_LOG_UNAVAILABLE"  # getDeleted refused the window (INVALID_REPLICATION_DATE)
_WINDOW = dt.timedelta(minutes=2)
_MARGIN = dt.timedelta(hours=1)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def check_delete_log(
    client: SalesforceClient, sobject: str, covered_ms: int, now_s: float, *, reported_ms: int | None = None
) -> tuple[str | None, int | None, int | None]:
    """(reconcile reason or None, the new ``covered``, the purge time seen) in epoch ms — one call.

    ``reported_ms`` is the purge time a previous run already reported: the same purge is not
    reported twice (both times have minute precision, so a purge within the minute of the last
    look counts, once)."""
    now = dt.datetime.fromtimestamp(now_s, dt.UTC)
    too_old = (
        now - dt.datetime.fromtimestamp(covered_ms / 1000, dt.UTC)
        > dt.timedelta(days=DELETE_LOG_DAYS) - _MARGIN
    )
    try:
        body = client.get_deleted(sobject, _iso(now - _WINDOW), _iso(now))
    except DataError as err:
        if err.code == "INVALID_REPLICATION_DATE":
            return (TOO_OLD if too_old else UNAVAILABLE), None, None
        raise
    try:
        purged_ms = ms_of(str(body["earliestDateAvailable"]))
        new_covered = ms_of(str(body["latestDateCovered"]))
    except ValueError:
        return UNAVAILABLE, None, None
    if too_old:
        return TOO_OLD, new_covered, purged_ms
    purged = purged_ms >= covered_ms and purged_ms != reported_ms
    return (PURGED if purged else None), new_covered, purged_ms
