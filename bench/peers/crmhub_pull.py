"""The crmhub side and the bare-client reference of ``python -m bench peers``, one pull per process.

    python -m bench.peers.crmhub_pull '{"side": "crmhub"|"crmhub-export"|"bare",
                                        "crm": "hubspot"|"salesforce",
                                        "url": ..., "token": ..., "ca": ..., "ids_path": ...}'

*crmhub* pulls every contact with the connector, as a sync's pull activity does: ``read_page`` in
FULL mode, 2,000 records asked per call (the worker's page size), every field the live schema
describes (the peers read all fields too). Salesforce picks Bulk API 2.0 above its
``bulk_threshold``; HubSpot pages the list API at 100. *crmhub-export* (HubSpot only) is the same
loop on a connection granted ``crm.export``: the read goes through one HubSpot export (start, status
polls, one streamed CSV download). *bare* is the fastest plain use of the
vendor's client: simple-salesforce ``query_all_iter`` over the same fields; hubspot-api-client
``get_page(limit=100, _preload_content=False)`` + ``json.loads``. Each side writes the record ids
it got to ``ids_path`` (one a line, counted by the harness after the clock stops) and prints one
JSON line: ``{"records": n}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # the bare side must not pay for crmhub's imports
    from connectors.base import TokenSource

__all__ = ["main", "pull_ids"]

PAGE_SIZE = 2000


def _static_token(token: str) -> TokenSource:
    """The harness issues a fresh access token per run; no refresh is needed within one."""
    return cast("TokenSource", SimpleNamespace(access_token=lambda: token, refresh=lambda _rejected: token))


def _crmhub(crm: str, url: str, token: str, ca: str, *, export: bool = False) -> Iterator[list[str]]:
    from connectors.base import Connector
    from schemas.connector import ReadMode, StreamState

    conn: Connector
    if crm == "hubspot":
        from connectors.hubspot import HubSpotConfig, HubSpotConnector
        from connectors.hubspot.config import EXPORT_SCOPE

        hs_config = HubSpotConfig(
            base_url=url,
            ca_bundle=Path(ca),
            granted_scopes=(EXPORT_SCOPE,) if export else (),
            export_threshold=1 if export else None,
        )
        conn, stream, key = HubSpotConnector(hs_config, _static_token(token)), "contacts", "hs_object_id"
    else:
        from connectors.salesforce import SalesforceConfig, SalesforceConnector

        config = SalesforceConfig(instance_url=url, ca_bundle=Path(ca), daily_quota_share=1.0)
        conn, stream, key = SalesforceConnector(config, _static_token(token)), "Contact", "Id"
    try:
        fields = sorted(conn.describe(stream).names())
        state = StreamState(mode=ReadMode.FULL)
        while True:
            page = conn.read_page(stream, state, PAGE_SIZE, fields)
            yield [str(r[key]) for r in page.records]
            if not page.has_more:
                return
            state = page.next_state
    finally:
        conn.close()


def _bare_hubspot(url: str, token: str, ca: str) -> Iterator[list[str]]:
    from hubspot import HubSpot

    client = HubSpot(access_token=token, host=url, ssl_ca_cert=ca)
    names = [p.name for p in client.crm.properties.core_api.get_all("contacts").results]
    api = client.crm.contacts.basic_api
    after = None
    while True:
        body = json.loads(api.get_page(limit=100, after=after, properties=names, _preload_content=False).data)
        yield [r["id"] for r in body["results"]]
        nxt = (body.get("paging") or {}).get("next")
        if not nxt:
            return
        after = nxt["after"]


def _bare_salesforce(url: str, token: str, ca: str) -> Iterator[list[str]]:
    from simple_salesforce.api import Salesforce

    from connectors.salesforce.client import pinned_session

    session = pinned_session(ca)
    sf = Salesforce(instance_url=url, session_id=token, session=session)
    contact: Any = sf.Contact  # an SFType, built by Salesforce.__getattr__
    desc = contact.describe()
    compound = {f["compoundFieldName"] for f in desc["fields"] if f.get("compoundFieldName")}
    names = [f["name"] for f in desc["fields"] if f["name"] not in compound]
    batch: list[str] = []
    soql = f"SELECT {', '.join(names)} FROM Contact"  # noqa: S608 - field names from describe
    for rec in sf.query_all_iter(soql):
        batch.append(rec["Id"])
        if len(batch) == PAGE_SIZE:
            yield batch
            batch = []
    yield batch
    session.close()


def pull_ids(side: str, crm: str, url: str, token: str, ca: str) -> Iterator[list[str]]:
    """Pages of record ids, as ``side`` ("crmhub", "crmhub-export" or "bare") reads them from ``crm``."""
    if side in ("crmhub", "crmhub-export"):
        return _crmhub(crm, url, token, ca, export=side == "crmhub-export")
    if crm == "hubspot":
        return _bare_hubspot(url, token, ca)
    return _bare_salesforce(url, token, ca)


def main(argv: list[str] | None = None) -> None:
    args: dict[str, Any] = json.loads((argv or sys.argv[1:])[0])
    n = 0
    with open(args["ids_path"], "w") as out:
        for ids in pull_ids(args["side"], args["crm"], args["url"], args["token"], args["ca"]):
            n += len(ids)
            out.write("\n".join(ids) + "\n" if ids else "")
    print(json.dumps({"records": n}))


if __name__ == "__main__":
    main()
