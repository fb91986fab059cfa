"""Reads of given records by id: ``SELECT … FROM X WHERE Id IN (…)`` over REST ``query``.

The ids go in chunks of at most :data:`MAX_IDS` (200, the smallest REST query batch the client asks
for, so each chunk is one call) and of at most :data:`URI_BUDGET` bytes of URL-encoded SOQL: a REST
call's URI and headers may not exceed 16,384 bytes together (414 URI Too Long beyond: Salesforce
Help "Maximum number of rows returned by SOQL queries over the REST API", article 000386264), far
below the 100,000-character SOQL statement limit ("SOQL and SOSL Limits for Search Queries", Salesforce
limits cheat sheet). The 2,000-byte allowance for the path and headers is a guess (our headers are a
bearer token and two short options). Ids are checked (15 or 18 alphanumerics) and quoted; field
names come from describe through :func:`~connectors.salesforce.soql.ident`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote_plus

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.reading import batch_rows
from connectors.salesforce.schema import FieldPlan
from connectors.salesforce.soql import ident, quote
from schemas.connector import Record
from schemas.errors import ConfigError

__all__ = ["MAX_IDS", "URI_BUDGET", "id_chunks", "read_by_ids"]

MAX_IDS = 200
URI_BUDGET = 16_384 - 2_000
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def _soql(sobject: str, plan: FieldPlan, ids: Sequence[str]) -> str:
    names = ", ".join(ident(n) for n in plan.select)
    listed = ", ".join(quote(i) for i in ids)
    return f"SELECT {names} FROM {ident(sobject)} WHERE Id IN ({listed})"  # noqa: S608 - ids checked and quoted; names from describe via ident()


def id_chunks(sobject: str, plan: FieldPlan, ids: Sequence[str]) -> list[list[str]]:
    """``ids`` (deduplicated, checked) in chunks of at most :data:`MAX_IDS` whose encoded query fits
    :data:`URI_BUDGET`; a :class:`ConfigError` for an id that is not a Salesforce id."""
    unique = list(dict.fromkeys(ids))
    for i in unique:
        if not _ID_RE.match(i):
            raise ConfigError("read_by_ids: an id is not a Salesforce record id (15 or 18 alphanumerics)")
    base = len(quote_plus(_soql(sobject, plan, [])))
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = base
    for i in unique:
        cost = len(quote_plus(quote(i) + ", "))
        if chunk and (len(chunk) >= MAX_IDS or size + cost > URI_BUDGET):
            chunks.append(chunk)
            chunk, size = [], base
        chunk.append(i)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def read_by_ids(
    client: SalesforceClient, sobject: str, plan: FieldPlan, ids: Sequence[str]
) -> tuple[list[Record], list[str]]:
    """The live records with these ids (``plan``'s fields plus ``SystemModstamp``) and the ids the
    org did not return (deleted, merged away or never there): one query per chunk."""
    records: list[Record] = []
    for chunk in id_chunks(sobject, plan, ids):
        what = f"query {sobject} by id"
        res = client.query(_soql(sobject, plan, chunk), include_deleted=False, batch_size=MAX_IDS, what=what)
        rows = list(res.records)
        while res.next_url is not None:  # an org answering in smaller batches than asked
            res = client.query_more(res.next_url, what=what)
            rows.extend(res.records)
        records += batch_rows(rows, plan, lambda _name, value: value).records
    found = {str(r.get("Id")) for r in records}
    return records, [i for i in dict.fromkeys(ids) if i not in found]
