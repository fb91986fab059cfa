"""Sandbox serving speed: page N seeded contacts through the official clients over HTTPS.

simple-salesforce ``query_all_iter`` (2,000 per page) and hubspot-api-client
``basic_api.get_page(limit=100, _preload_content=False)`` + ``json.loads``, against the sandbox
started in-process (loopback, TLS, no injected latency). Issue 2 asks for seconds, not minutes, at
100k contacts.

    python -m bench sandbox [--contacts 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hubspot import HubSpot
from simple_salesforce.api import Salesforce

from connectors.salesforce.client import pinned_session
from sandbox.runtime import start_sandbox


def _page_salesforce(url: str, token: str, ca: str) -> int:
    sf = Salesforce(instance_url=url, session_id=token, session=pinned_session(ca))
    ids = {
        r["Id"]
        for r in sf.query_all_iter("SELECT Id, FirstName, LastName, Email, SystemModstamp FROM Contact")
    }
    return len(ids)


def _page_hubspot(url: str, token: str, ca: str) -> int:
    api = HubSpot(access_token=token, host=url, ssl_ca_cert=ca).crm.contacts.basic_api
    ids: set[str] = set()
    after = None
    while True:
        body = json.loads(api.get_page(limit=100, after=after, _preload_content=False).data)
        ids.update(r["id"] for r in body["results"])
        nxt = body.get("paging", {}).get("next")
        if nxt is None:
            return len(ids)
        after = nxt["after"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench sandbox")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.contacts
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with start_sandbox(
            Path(tmp), seed_counts={"salesforce": {"Contact": n}, "hubspot": {"contacts": n}}
        ) as sb:
            seeded = time.perf_counter() - started
            sf: Any = sb.salesforce
            hs: Any = sb.hubspot
            hs.set_burst_limit(None)  # measure serving, not the emulated rate limit
            sf_token = sf.oauth.issue_direct(sb.info.salesforce_client_id).access_token
            hs_token = hs.oauth.issue_direct(sb.info.hubspot_client_id).access_token
            results: dict[str, list[float]] = {"salesforce": [], "hubspot": []}
            for _ in range(args.runs):
                for name, fn, url, token in (
                    ("salesforce", _page_salesforce, sb.info.salesforce_url, sf_token),
                    ("hubspot", _page_hubspot, sb.info.hubspot_url, hs_token),
                ):
                    t0 = time.perf_counter()
                    count = fn(url, token, sb.info.ca_path)
                    results[name].append(time.perf_counter() - t0)
                    if count != n:
                        raise SystemExit(f"{name}: paged {count} distinct contacts, expected {n}")
    out = {"benchmark": "sandbox-paging", "contacts": n, "seed_both_s": round(seeded, 2)}
    for name, times in results.items():
        med = statistics.median(times)
        out[f"{name}_median_s"] = round(med, 2)
        out[f"{name}_records_per_s"] = round(n / med)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
