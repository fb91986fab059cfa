"""Every live record id of an object, page by page: the cheap listing delete reconciliation compares
with what the destination holds (a purged recycle bin leaves no delete to read).

``SELECT Id`` only, so a REST batch of 2,000 ids is ~60 KB and a Bulk API 2.0 result set of 50,000
ids ~1 MB. The first call runs ``SELECT Id FROM X ORDER BY Id`` without LIMIT; its ``totalSize``
picks the path as full reads do (``bulk_threshold``; 0 = always Bulk):

* REST: keyset pages ``WHERE Id > :last ORDER BY Id LIMIT n`` (``state.cursor`` = last id);
* Bulk: one job ``SELECT Id FROM X WHERE Id > :last`` (no ORDER BY: PK chunking stays on), result
  sets of ``page_size`` by locator (``page_token``), the job deleted after the last set. A job the
  org refuses, that fails or is lost continues over REST from ``state.cursor`` — ids handed out from
  the job may then come again (harmless for a set comparison).

Deleted and merged-away records are not live, so they are never listed. A record created during the
listing may be missing: compare only with records the destination got before the listing began.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from connectors.salesforce.bulkread import REFUSALS, forget_job, wait_for_job
from connectors.salesforce.client import InvalidLocator, NotFound, SalesforceClient
from connectors.salesforce.soql import ident, quote
from schemas.connector import IdPage, ReadMode, StreamState
from schemas.errors import CrmhubError, DataError, TransientError

__all__ = ["list_ids"]

_ID_RE = re.compile(r"^[A-Za-z0-9]{15,18}$")


def _where(state: StreamState) -> str:
    if state.cursor is None:
        return ""
    if not _ID_RE.match(state.cursor):
        raise InvalidLocator("Salesforce id listing: bad position in state", code="INVALID_ID_POSITION")
    return f" WHERE Id > {quote(state.cursor)}"


def _ids(rows: list[dict[str, object]] | list[dict[str, str]]) -> list[str]:
    out = [r.get("Id") for r in rows]
    if not all(isinstance(i, str) and _ID_RE.match(i) for i in out):
        raise TransientError("Salesforce id listing: row without a valid Id", code="MALFORMED_RESPONSE")
    return [str(i) for i in out]


def _rest(
    client: SalesforceClient, sobject: str, state: StreamState, page_size: int, *, count_above: int | None
) -> IdPage:
    """A REST page of ids; with ``count_above`` the query has no LIMIT and its total picks the path."""
    count = count_above is not None
    what = f"list ids {sobject}"
    soql = f"SELECT Id FROM {ident(sobject)}{_where(state)} ORDER BY Id ASC"  # noqa: S608 - ident()/quote()
    if not count:
        soql += f" LIMIT {page_size}"
    res = client.query(soql, include_deleted=False, batch_size=page_size, what=what)
    rows = list(res.records)
    while res.next_url is not None and len(rows) < page_size:
        try:
            res = client.query_more(res.next_url, what=what)
        except InvalidLocator:
            break  # the next page carries on from the last id
        rows.extend(res.records)
    ids = _ids(rows[:page_size])
    more = res.total > len(ids) if count else len(ids) == page_size
    extra = dict(state.extra)
    if count_above is not None:
        extra["path"] = "bulk" if res.total > count_above else "rest"
    nxt = state.model_copy(update={"cursor": ids[-1] if ids else state.cursor, "extra": extra})
    return IdPage(ids, nxt, more)


def _bulk(
    client: SalesforceClient,
    sobject: str,
    state: StreamState,
    page_size: int,
    *,
    wait_s: float,
    sleep: Callable[[float], None],
) -> IdPage | None:
    what = f"bulk list ids {sobject}"
    extra = dict(state.extra)
    job = extra.get("bulk_job")
    if job is None:
        soql = f"SELECT Id FROM {ident(sobject)}{_where(state)}"  # noqa: S608 - ident()/quote()
        try:
            job = extra["bulk_job"] = client.bulk_create(soql, what=what)
        except CrmhubError as err:
            if isinstance(err, DataError) and err.code in REFUSALS:
                return None
            raise
    if extra.get("bulk_ready") != "1":
        status = wait_for_job(client, job, what, wait_s, sleep)
        if status in (None, "failed"):
            return None
        if status == "waiting":
            return IdPage([], state.model_copy(update={"extra": extra}), True)
        extra["bulk_ready"] = "1"
    try:
        res = client.bulk_results(job, state.page_token, page_size, what=what)
    except (NotFound, InvalidLocator):
        return None
    ids = _ids(res.rows)
    if res.next_locator is None:
        forget_job(client, job, what)
        extra = {k: v for k, v in extra.items() if k not in ("bulk_job", "bulk_ready")}
    nxt = state.model_copy(update={"page_token": res.next_locator, "extra": extra})
    return IdPage(ids, nxt, res.next_locator is not None)


def list_ids(
    client: SalesforceClient,
    sobject: str,
    state: StreamState,
    page_size: int,
    *,
    bulk_threshold: int,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> IdPage:
    """The next page of live ids of ``sobject`` after ``state`` (start with ``StreamState()``)."""
    state = state.model_copy(update={"mode": ReadMode.FULL})
    path = state.extra.get("path")
    if path is None and bulk_threshold > 0 and state.cursor is None:
        return _rest(client, sobject, state, page_size, count_above=bulk_threshold)
    if path in (None, "bulk"):
        page = _bulk(client, sobject, state, page_size, wait_s=wait_s, sleep=sleep)
        if page is not None:
            return page
        state = state.model_copy(update={"page_token": None, "extra": {"path": "rest"}})
    return _rest(client, sobject, state, page_size, count_above=None)
