"""Salesforce connector pull speed: N seeded contacts through ``read_page`` from the sandbox over HTTPS.

Variants, side by side in one run against one in-process sandbox (loopback, TLS, no injected
latency): REST incremental (``queryAll`` keyset pages), REST full (``query`` keyset pages), Bulk API
2.0 full (one job, result sets by locator), and, as the floor, raw simple-salesforce
``query_all_iter`` over the same fields. Reports records/s (median of ``--runs``) and vendor API
calls per run; every run must deliver each seeded contact exactly once.

    python -m bench.salesforce_connector [--contacts 100000] [--runs 3] [--page-size 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from simple_salesforce.api import Salesforce

from connectors.salesforce import SalesforceConfig, SalesforceConnector
from connectors.salesforce.client import pinned_session
from connectors.testing import read_all
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState

FIELDS = [
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Title",
    "MailingAddress",
    "External_Id__c",
    "Lead_Score__c",
]
RAW_SOQL = (
    "SELECT Id, SystemModstamp, FirstName, LastName, Email, Phone, Title, MailingStreet, MailingCity, "
    "MailingState, MailingPostalCode, MailingCountry, MailingLatitude, MailingLongitude, "
    "MailingGeocodeAccuracy, External_Id__c, Lead_Score__c FROM Contact"
)


class _Tokens:
    def __init__(self, sb: SalesforceSandbox) -> None:
        self.sb = sb
        self.token = sb.issue_token()

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected: str) -> str:
        if rejected == self.token:
            self.token = self.sb.issue_token()
        return self.token


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.salesforce_connector")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--page-size", type=int, default=2000)
    args = ap.parse_args(argv)
    n, page_size = args.contacts, args.page_size
    with tempfile.TemporaryDirectory() as tmp:
        ca = SandboxCA.ensure(Path(tmp))
        sb = SalesforceSandbox(daily_api_limit=10_000_000)
        t0 = time.perf_counter()
        sb.seed({"Contact": n}, seed=1)
        seeded = time.perf_counter() - t0
        srv = ServerThread(sb.app(), ca, name="salesforce").start()
        sb.base_url = srv.url
        try:
            out = _measure(sb, srv.url, ca, n, page_size, args.runs)
        finally:
            srv.stop()
            sb.store.close()
    print(json.dumps({"benchmark": "salesforce-connector", "contacts": n, "seed_s": round(seeded, 2), **out}))


def _measure(
    sb: SalesforceSandbox, url: str, ca: SandboxCA, n: int, page_size: int, runs: int
) -> dict[str, object]:
    def connector_run(mode: ReadMode, threshold: int) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            config = SalesforceConfig(
                instance_url=url, ca_bundle=ca.ca_path, bulk_threshold=threshold, daily_quota_share=1.0
            )
            conn = SalesforceConnector(config, _Tokens(sb), sleep=lambda _s: None)
            try:
                res = read_all(conn, "Contact", StreamState(mode=mode), page_size=page_size, fields=FIELDS)
            finally:
                conn.close()
            ids = {r["Id"] for r in res.records}
            if len(ids) != n or len(res.records) != n:
                raise SystemExit(f"{mode}: {len(res.records)} records, {len(ids)} distinct, expected {n}")
            return n, conn.calls

        return run

    def raw_run() -> tuple[int, int]:
        session = pinned_session(ca.ca_path)
        sf = Salesforce(instance_url=url, session_id=sb.issue_token(), session=session)
        before = len(sb.calls.all())
        ids = {r["Id"] for r in sf.query_all_iter(RAW_SOQL)}
        session.close()
        if len(ids) != n:
            raise SystemExit(f"raw: {len(ids)} distinct, expected {n}")
        return n, len(sb.calls.all()) - before

    variants: dict[str, Callable[[], tuple[int, int]]] = {
        "rest_incremental": connector_run(ReadMode.INCREMENTAL, 10**9),
        "rest_full": connector_run(ReadMode.FULL, 10**9),
        "bulk_full": connector_run(ReadMode.FULL, 0),
        "raw_simple_salesforce_query_all_iter": raw_run,
    }
    out: dict[str, object] = {"page_size": page_size, "runs": runs}
    for name, fn in variants.items():
        times, calls = [], 0
        for _ in range(runs):
            t = time.perf_counter()
            _, calls = fn()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        out[name] = {"seconds": round(med, 2), "records_per_s": round(n / med), "api_calls": calls}
    return out


if __name__ == "__main__":
    main()
