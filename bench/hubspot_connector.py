"""HubSpot connector throughput against the sandbox (loopback HTTPS, vendor rate limits lifted).

Measures records/s and API calls for N seeded contacts through ``HubSpotConnector.read_page``:
full (list API, 100 per call), incremental first read (list backfill), incremental over search
(cursor at the epoch: keyset search, 200 per call); and the parsing cost of hubspot-api-client's
response models versus raw JSON on the same list pages.

    python -m bench.hubspot_connector [--contacts 100000] [--runs 3]

With HubSpot's own limits the floor is set by calls, not by the connector: 190 requests per 10 s
(private app, Professional) for list pages and 4-5 searches per second; the report prints both.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubspot import HubSpot

from connectors.hubspot import HubSpotConfig, HubSpotConnector
from connectors.testing import read_all
from sandbox.hubspot import HubSpotSandbox
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState

FIELDS = ["email", "firstname", "lastname", "city", "lifecyclestage"]


class _StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected: str) -> str:
        return self.token


def _timed(fn: Callable[[], tuple[int, int]], runs: int) -> tuple[float, int, int]:
    """Median seconds over ``runs``, and the (records, calls) of the last run."""
    times, out = [], (0, 0)
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out[0], out[1]


def _read(conn: HubSpotConnector, state: StreamState, page_size: int, expected: int) -> tuple[int, int]:
    before = conn.client.calls
    res = read_all(conn, "contacts", state, page_size=page_size, fields=FIELDS)
    ids = {r["hs_object_id"] for r in res.records}
    assert len(ids) == len(res.records) == expected, (len(ids), len(res.records))
    return len(ids), conn.client.calls - before


def _sdk_pages(api: Any, raw: bool, limit_records: int) -> tuple[int, int]:
    after, n, calls = None, 0, 0
    while n < limit_records:
        kwargs: dict[str, Any] = {"limit": 100, "properties": FIELDS}
        if after:
            kwargs["after"] = after
        calls += 1
        if raw:
            body = json.loads(api.get_page(**kwargs, _preload_content=False).data)
            n += len(body["results"])
            after = (body.get("paging") or {}).get("next", {}).get("after")
        else:
            page = api.get_page(**kwargs)
            n += len(page.results)
            after = page.paging.next.after if page.paging and page.paging.next else None
        if not after:
            break
    return n, calls


def _parse_speed(url: str, token: str, ca: str, sample: int, runs: int) -> tuple[float, float]:
    """Records/s through hubspot-api-client with its models, then with raw JSON (same pages)."""
    api = HubSpot(access_token=token, host=url, ssl_ca_cert=ca).crm.contacts.basic_api
    model_s, got_m, _ = _timed(lambda: _sdk_pages(api, False, sample), runs)
    raw_s, got_r, _ = _timed(lambda: _sdk_pages(api, True, sample), runs)
    api.api_client.rest_client.pool_manager.clear()
    return got_m / model_s, got_r / raw_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hubspot_connector")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parse-sample", type=int, default=20_000, help="records for raw vs models")
    args = parser.parse_args(argv)

    ca = SandboxCA.ensure(Path(tempfile.mkdtemp(prefix="crmhub-bench-")))
    hs = HubSpotSandbox(burst_limit=None, search_per_second=None)
    started = time.perf_counter()
    hs.seed({"contacts": args.contacts}, seed=5)
    print(f"seeded {args.contacts:,} contacts in {time.perf_counter() - started:.1f} s")
    srv = ServerThread(hs.app(), ca, name="hubspot-bench").start()
    token = hs.issue_private_app_token()
    config = HubSpotConfig(
        base_url=srv.url, ca_bundle=ca.ca_path, search_settle_s=0, search_rate_per_s=100, max_pause_s=0
    )
    conn = HubSpotConnector(config, _StaticToken(token))
    n = args.contacts
    try:
        rows = []
        for label, state, size in (
            ("full (list, 100/call)", StreamState(mode=ReadMode.FULL), 100),
            ("incremental, first read (list backfill)", StreamState(), 100),
            ("incremental over search (keyset, 200/call)", StreamState(cursor="0"), 200),
        ):
            secs, count, calls = _timed(lambda s=state, z=size: _read(conn, s, z, n), args.runs)  # type: ignore[misc]
            rows.append((label, count / secs, calls, secs))
        print(f"\n{n:,} contacts, {len(FIELDS)} properties, median of {args.runs}:")
        for label, rate, calls, secs in rows:
            limited = calls / 19.0 if "search" not in label else calls / 4.0
            per_100k = calls * 100_000 // n
            print(
                f"  {label:44s} {rate:9,.0f} records/s  {calls:6,d} calls ({per_100k:,d} per 100k)"
                f"  {secs:6.2f} s  (>= {limited:,.0f} s under HubSpot's limits)"
            )
        sample = min(args.parse_sample, n)
        model_rate, raw_rate = _parse_speed(srv.url, token, str(ca.ca_path), sample, args.runs)
        print(
            f"\nhubspot-api-client on {sample:,} contacts: models {model_rate:,.0f} records/s, "
            f"raw JSON {raw_rate:,.0f} records/s: raw is {raw_rate / model_rate:.1f}x faster"
        )
    finally:
        conn.close()
        gc.collect()
        srv.stop()
        hs.store.close()


if __name__ == "__main__":
    main()
