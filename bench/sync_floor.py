"""The floor of ``bench.sync_overhead``: the same Salesforce → HubSpot copy with the bare client libraries.

No governance, no Temporal, no staging: simple-salesforce ``query_all_iter`` streams the contacts
(2,000 per page), and every 100 of them go to HubSpot in one hubspot-api-client batch upsert on
``email``, one call after the other — what a plain script would do. Response bodies are not turned
into models (``_preload_content=False``): the fastest way to use that client, so the floor is not
flattered. Run as a child process by the benchmark (so it does not share a GIL with the sandbox) and
prints one JSON line: seconds from the first call to the last answer, records sent, peak RSS.

    python -m bench.sync_floor '{"sf_url": ..., "sf_token": ..., "hs_url": ..., "hs_token": ..., "ca": ...}'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hubspot import HubSpot
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectBatchInputUpsert,
)
from simple_salesforce.api import Salesforce
from urllib3.util.retry import Retry

from connectors.salesforce.client import pinned_session

SOQL = "SELECT Id, Email, FirstName, LastName, Phone, MailingCountry FROM Contact"
# The demo sync's mapping (api.demo.DEMO_MAPPING), without its pseudonymization of Phone.
MAPPING = {"FirstName": "firstname", "LastName": "lastname", "Phone": "phone", "MailingCountry": "country"}
BATCH = 100


def peak_rss_bytes(pid: int | str = "self") -> int:
    """VmHWM of a process (its peak resident set), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def copy(sf_url: str, sf_token: str, hs_url: str, hs_token: str, ca: str) -> dict[str, Any]:
    """Copy every contact; returns seconds, records sent and HubSpot calls."""
    session = pinned_session(Path(ca))
    sf = Salesforce(instance_url=sf_url, session_id=sf_token, session=session)
    # A plain script still has to honour 429 + Retry-After when HubSpot's burst limit is on.
    retry = Retry(total=50, status_forcelist=(429,), allowed_methods=None, respect_retry_after_header=True)
    hs = HubSpot(access_token=hs_token, host=hs_url, ssl_ca_cert=ca, retry=retry)
    batch_api = hs.crm.contacts.batch_api
    sent = calls = 0
    inputs: list[SimplePublicObjectBatchInputUpsert] = []

    def flush() -> None:
        nonlocal sent, calls
        body = BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
        answer = batch_api.upsert(body, _preload_content=False)
        if answer.status not in (200, 201, 207):
            raise SystemExit(f"HubSpot batch upsert answered {answer.status}: {answer.data[:200]!r}")
        sent += len(inputs)
        calls += 1
        inputs.clear()

    t0 = time.perf_counter()
    for rec in sf.query_all_iter(SOQL):
        props = {dst: rec[src] for src, dst in MAPPING.items() if rec.get(src) is not None}
        inputs.append(
            SimplePublicObjectBatchInputUpsert(id_property="email", id=rec["Email"], properties=props)
        )
        if len(inputs) == BATCH:
            flush()
    if inputs:
        flush()
    seconds = time.perf_counter() - t0
    session.close()
    return {"seconds": seconds, "records": sent, "hubspot_calls": calls, "peak_rss": peak_rss_bytes()}


def main(argv: list[str] | None = None) -> None:
    args = json.loads((argv or sys.argv[1:])[0])
    print(json.dumps(copy(args["sf_url"], args["sf_token"], args["hs_url"], args["hs_token"], args["ca"])))


if __name__ == "__main__":
    main()
