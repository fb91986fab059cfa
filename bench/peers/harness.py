"""``python -m bench peers``: pull N contacts from each sandbox CRM with crmhub and with its peers.

One process serves both sandbox CRMs (HTTPS on loopback, N seeded contacts each, HubSpot's burst
limit off); every puller runs in a child process of its own and is measured from outside
(:mod:`bench.peers.measure`): wall seconds from start to exit, peak RSS of its process tree. Per
CRM, side by side in every round (the order rotates round by round):

- **crmhub** — the connector's ``read_page`` loop (:mod:`bench.peers.crmhub_pull`), crmhub's venv;
- **crmhub-export** — HubSpot only: the same loop on a connection granted ``crm.export``, so the
  full read goes through one HubSpot export (:mod:`connectors.hubspot.exports`);
- **bare** — the vendor's client at its fastest, the reference row (same module);
- **dlt** — the verified source's contacts resource, ``extract`` only (:mod:`bench.peers.dlt_extract`);
- **tap-hubspot** / **tap-salesforce** — the Singer tap, contacts selected with every field;
- **airbyte-source-hubspot** / **airbyte-source-salesforce** — ``read``, full refresh of contacts.

Peers run in venvs the benchmark creates (:mod:`bench.peers.venvs`); their vendor hosts are
rewritten to the sandbox by :mod:`bench.peers.shim` (``sitecustomize``, base URLs only). Every run
must deliver each of the N contacts exactly once, else its row says what it delivered. A peer that
cannot run records why. Output: one JSON document on stdout, the table on stderr.

    python -m bench peers [--records 100000] [--runs 3] [--latency-ms 0,50]
        [--dlt-sources PATH] [--only crmhub,crmhub-export,bare,dlt,singer,airbyte]
        [--crms hubspot,salesforce] [--hubspot-export-rows-per-s R]
        [--venv-dir .bench-venvs] [--timeout-s 900] [--once-over-s 300]

A puller whose first run takes longer than ``--once-over-s`` (airbyte-source-hubspot at 100k) is not
repeated: its one run stands for its median, and ``good_runs`` in the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.peers import dlt_extract, extras
from bench.peers.measure import count_records, run_measured
from bench.peers.singer_catalog import select
from bench.peers.venvs import ensure_venv
from sandbox.faults import FaultPlan, FaultRule
from sandbox.runtime import RunningSandbox, start_sandbox
from sandbox.server import ServerThread

__all__ = ["PULLERS", "Session", "main", "run_puller"]

REPO = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).resolve().parent / "shim"
HERE = Path(__file__).resolve().parent
START_DATE = "2000-01-01T00:00:00Z"
# HubSpot accepts an object type's singular name in a path; the sandbox routes the plural only
# (airbyte-source-hubspot reads /crm/v3/objects/contact). Same endpoint, so the shim maps it.
HUBSPOT_ALIASES = {"/crm/v3/objects/contact": "/crm/v3/objects/contacts"}


@dataclass
class Session:
    """The sandbox, the extras server, scratch space and the options shared by every run."""

    sandbox: RunningSandbox
    extras_url: str
    tmp: Path
    venv_dir: Path
    dlt_sources: Path | None
    records: int
    catalogs: dict[str, Path] = field(default_factory=dict)

    @property
    def ca(self) -> str:
        return self.sandbox.info.ca_path

    def url(self, crm: str) -> str:
        return self.sandbox.info.hubspot_url if crm == "hubspot" else self.sandbox.info.salesforce_url

    def token(self, crm: str) -> str:
        hs: Any = self.sandbox.hubspot
        sf: Any = self.sandbox.salesforce
        return str(hs.issue_private_app_token() if crm == "hubspot" else sf.issue_token())

    def refresh_grant(self) -> tuple[str, str, str]:
        """(client id, client secret, refresh token) of the sandbox Salesforce's OAuth client."""
        info = self.sandbox.info
        grant = self.sandbox.salesforce.oauth.issue_direct(info.salesforce_client_id)
        return info.salesforce_client_id, info.salesforce_client_secret, str(grant.refresh_token)

    def peer_env(self) -> dict[str, str]:
        """Environment of a peer: the URL-rewrite shim on, the sandbox CA trusted, no telemetry."""
        rewrite = {
            "https://api.hubapi.com": self.sandbox.info.hubspot_url,
            "https://login.salesforce.com": self.sandbox.info.salesforce_url,
            "https://test.salesforce.com": self.sandbox.info.salesforce_url,
        }
        rewrite.update({"https://api.hubapi.com" + p: self.extras_url + p for p in extras.HUBSPOT_PATHS})
        for alias, path in HUBSPOT_ALIASES.items():
            rewrite["https://api.hubapi.com" + alias] = self.sandbox.info.hubspot_url + path
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env.update(
            PYTHONPATH=str(SHIM),
            CRMHUB_BENCH_REWRITE=json.dumps(rewrite),
            CRMHUB_BENCH_CA=self.ca,
            REQUESTS_CA_BUNDLE=self.ca,
            SSL_CERT_FILE=self.ca,
            RUNTIME__DLTHUB_TELEMETRY="false",
            DO_NOT_TRACK="1",
        )
        return env


@dataclass(frozen=True)
class Prepared:
    """A ready-to-run puller: its command line, environment and how to count what it delivered."""

    cmd: list[str]
    env: dict[str, str]
    count: Callable[[Path], tuple[int, int]]  # stdout file -> (records, distinct ids)
    note: str = ""


class CannotRun(Exception):
    """This puller cannot run here; the message says why (it goes into the table)."""


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _own(s: Session, crm: str, side: str) -> Prepared:
    ids = s.tmp / f"{side}-{crm}.ids"
    arg = {
        "side": side,
        "crm": crm,
        "url": s.url(crm),
        "token": s.token(crm),
        "ca": s.ca,
        "ids_path": str(ids),
    }
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def count(_stdout: Path) -> tuple[int, int]:
        lines = ids.read_text().split()
        return len(lines), len(set(lines))

    return Prepared([sys.executable, "-m", "bench.peers.crmhub_pull", json.dumps(arg)], env, count)


def _own_export(s: Session, crm: str) -> Prepared:
    if crm != "hubspot":
        raise CannotRun("HubSpot only: Salesforce's bulk path (Bulk API 2.0) is in the crmhub row already")
    return _own(s, crm, "crmhub-export")


def _dlt(s: Session, crm: str) -> Prepared:
    if s.dlt_sources is None:
        raise CannotRun("--dlt-sources not given (get them with `dlt init hubspot duckdb`)")
    if crm == "salesforce":
        raise CannotRun(
            "needs Bulk API v1 (/services/async), which the sandbox does not emulate (it has Bulk 2.0); "
            "its REST fallback is taken only on FeatureNotEnabled and breaks past 2,000 records "
            "(query_more called with a URL as an id)"
        )
    bin_dir = ensure_venv(s.venv_dir, "dlt", s.tmp / "pip.log")
    pipes = s.tmp / f"dlt-{crm}-{time.monotonic_ns()}"
    config = {"token": s.token(crm), "url": s.url(crm)}
    cmd = [
        str(bin_dir / "python"),
        str(HERE / "dlt_extract.py"),
        str(s.dlt_sources),
        crm,
        json.dumps(config),
        str(pipes),
    ]
    return Prepared(cmd, s.peer_env(), lambda _out: dlt_extract.extracted_ids(pipes, crm), "extract only")


def _tap_hubspot(s: Session) -> Prepared:
    bin_dir = ensure_venv(s.venv_dir, "tap-hubspot", s.tmp / "pip.log")
    config = _write(s.tmp / "tap-hubspot.json", {"api_key": s.token("hubspot"), "start_date": START_DATE})
    catalog = s.catalogs.get("tap-hubspot")
    if catalog is None:  # the tap's own discovery of the contacts stream (its --discover needs v1 APIs)
        catalog = s.tmp / "tap-hubspot-catalog.json"
        helper = [str(bin_dir / "python"), str(HERE / "singer_catalog.py"), "tap_hubspot", "contacts"]
        subprocess.run(  # noqa: S603 - the tap's interpreter, our helper
            [*helper, str(config), str(catalog)], env=s.peer_env(), check=True, capture_output=True
        )
        s.catalogs["tap-hubspot"] = catalog
    cmd = [str(bin_dir / "tap-hubspot"), "--config", str(config), "--properties", str(catalog)]
    return Prepared(cmd, s.peer_env(), lambda out: count_records(out, ("id",)))


def _tap_salesforce(s: Session) -> Prepared:
    bin_dir = ensure_venv(s.venv_dir, "tap-salesforce", s.tmp / "pip.log")
    client_id, secret, refresh = s.refresh_grant()
    config = _write(
        s.tmp / "tap-salesforce.json",
        {
            "client_id": client_id, "client_secret": secret, "refresh_token": refresh,
            "start_date": START_DATE, "api_type": "REST", "select_fields_by_default": True,
            "is_sandbox": False,
        },
    )  # fmt: skip
    catalog = s.catalogs.get("tap-salesforce")
    if catalog is None:
        found = subprocess.run(  # noqa: S603 - the tap's own discovery
            [str(bin_dir / "tap-salesforce"), "--config", str(config), "--discover"],
            env=s.peer_env(), check=True, capture_output=True,
        )  # fmt: skip
        catalog = _write(s.tmp / "tap-salesforce-catalog.json", select(json.loads(found.stdout), "Contact"))
        s.catalogs["tap-salesforce"] = catalog
    cmd = [str(bin_dir / "tap-salesforce"), "--config", str(config), "--properties", str(catalog)]
    return Prepared(cmd, s.peer_env(), lambda out: count_records(out, ("Id",)), "REST (queryAll)")


def _airbyte_catalog(stream: str) -> dict[str, Any]:
    return {
        "streams": [
            {
                "stream": {"name": stream, "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
                "sync_mode": "full_refresh",
                "destination_sync_mode": "overwrite",
            }
        ]
    }


def _airbyte(s: Session, crm: str) -> Prepared:
    name = f"airbyte-source-{crm}"
    bin_dir = ensure_venv(s.venv_dir, name, s.tmp / "pip.log")
    if crm == "hubspot":
        config: dict[str, Any] = {
            "credentials": {"credentials_title": "Private App Credentials", "access_token": s.token(crm)},
            "start_date": START_DATE,
        }
        stream, key, note = "contacts", ("id",), "full refresh"
    else:
        client_id, secret, refresh = s.refresh_grant()
        config = {
            "client_id": client_id, "client_secret": secret, "refresh_token": refresh,
            "start_date": START_DATE, "is_sandbox": False,
        }  # fmt: skip
        stream, key, note = "Contact", ("Id",), "full refresh; REST (Contact has compound fields)"
    cfg = _write(s.tmp / f"{name}.json", config)
    cat = _write(s.tmp / f"{name}-catalog.json", _airbyte_catalog(stream))
    cmd = [str(bin_dir / f"source-{crm}"), "read", "--config", str(cfg), "--catalog", str(cat)]
    return Prepared(cmd, s.peer_env(), lambda out: count_records(out, key), note)


PULLERS: dict[str, Callable[[Session, str], Prepared]] = {
    "crmhub": lambda s, crm: _own(s, crm, "crmhub"),
    "crmhub-export": lambda s, crm: _own_export(s, crm),
    "bare": lambda s, crm: _own(s, crm, "bare"),
    "dlt": _dlt,
    "singer": lambda s, crm: _tap_hubspot(s) if crm == "hubspot" else _tap_salesforce(s),
    "airbyte": _airbyte,
}
LABELS = {
    ("singer", "hubspot"): "tap-hubspot 4.5.0",
    ("singer", "salesforce"): "tap-salesforce 2.8.1",
    ("airbyte", "hubspot"): "airbyte-source-hubspot 5.7.0",
    ("airbyte", "salesforce"): "airbyte-source-salesforce 2.10.3",
    ("dlt", "hubspot"): "dlt 1.31.0 + verified hubspot",
    ("dlt", "salesforce"): "dlt 1.31.0 + verified salesforce",
    ("crmhub", "hubspot"): "crmhub HubSpotConnector",
    ("crmhub", "salesforce"): "crmhub SalesforceConnector",
    ("crmhub-export", "hubspot"): "crmhub HubSpotConnector, crm.export granted (Exports API)",
    ("crmhub-export", "salesforce"): "crmhub-export: HubSpot only",
    ("bare", "hubspot"): "bare hubspot-api-client (raw JSON)",
    ("bare", "salesforce"): "bare simple-salesforce query_all_iter",
}


def run_puller(s: Session, name: str, crm: str, timeout_s: float) -> dict[str, Any]:
    """One measured run; ``{"error": why}`` instead when the puller cannot run or fails."""
    try:
        prepared = PULLERS[name](s, crm)
    except CannotRun as exc:
        return {"error": str(exc), "cannot_run": True}
    except subprocess.CalledProcessError as exc:
        return {"error": f"setup failed: {(exc.stderr or b'')[-600:].decode(errors='replace')}"}
    stdout = s.tmp / f"{name}-{crm}.out"
    m = run_measured(prepared.cmd, env=prepared.env, stdout_path=stdout, cwd=s.tmp, timeout_s=timeout_s)
    records, distinct = prepared.count(stdout)
    out: dict[str, Any] = {
        "seconds": round(m.seconds, 2),
        "records": records,
        "distinct": distinct,
        "records_per_s": round(records / m.seconds) if m.seconds else 0,
        "peak_rss_mb": round(m.peak_rss / 2**20, 1),
        "note": prepared.note,
    }
    if m.returncode != 0:
        timed_out = m.seconds >= timeout_s
        why = m.stderr_tail.strip() or _trace_error(stdout)
        out["error"] = (
            f"timed out after {timeout_s:.0f} s" if timed_out else f"exit {m.returncode}: {why[-600:]}"
        )
    elif distinct != s.records or records != s.records:
        out["error"] = f"delivered {records} records, {distinct} distinct, of {s.records}"
    stdout.unlink(missing_ok=True)
    return out


def _trace_error(stdout: Path) -> str:
    """The last error an Airbyte source reported on stdout (it writes its failures there)."""
    errors: list[str] = []
    with stdout.open("rb") as fh:
        for line in fh:
            if b'"TRACE"' in line and b'"ERROR"' in line:
                error = json.loads(line)["trace"].get("error", {})
                errors.append(str(error.get("internal_message") or error.get("message", "")))
            elif b'"LOG"' in line and b'"ERROR"' in line:
                errors.append(str(json.loads(line)["log"].get("message", "")))
    return " | ".join(errors[:2])


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1]["error"], "runs": runs}
    return {
        "records_per_s": round(statistics.median(r["records_per_s"] for r in good)),
        "seconds": round(statistics.median(r["seconds"] for r in good), 2),
        "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in good), 1),
        "good_runs": len(good),
        "runs": runs,
    }


def _v3_properties(s: Session, obj: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{s.sandbox.info.hubspot_url}/crm/v3/properties/{obj}",
        headers={"Authorization": f"Bearer {s.token('hubspot')}"}, verify=s.ca, timeout=30,
    )  # fmt: skip
    answer.raise_for_status()
    return list(answer.json()["results"])


def _table(result: dict[str, Any]) -> str:
    lines = []
    for lat in result["latencies"]:
        lines.append(
            f"\n{result['records']:,} contacts, latency {lat['latency_ms']} ms, median of {result['runs']}:"
        )
        for crm, rows in lat["crms"].items():
            crm_rate = rows.get("crmhub", {}).get("records_per_s")
            export_rate = rows.get("crmhub-export", {}).get("records_per_s")
            for name, row in rows.items():
                label = LABELS[(name, crm)]
                if "error" in row:
                    lines.append(f"  {crm:10s} {label:40s} -- {row['error'][:160]}")
                    continue
                per_s = row["records_per_s"]
                ratio = f"{crm_rate / per_s:.2f}x" if crm_rate and per_s else "-"
                export = f"  crmhub-export/this {export_rate / per_s:.2f}x" if export_rate and per_s else ""
                lines.append(
                    f"  {crm:10s} {label:40s} {per_s:8,d}/s {row['peak_rss_mb']:7.1f} MB"
                    f"  {row['seconds']:7.2f} s  crmhub/this {ratio}{export}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench peers")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", default="0", help="comma-separated, injected on every sandbox call")
    ap.add_argument(
        "--dlt-sources", type=Path, help="a checkout of dlt-hub/verified-sources (holds sources/)"
    )
    ap.add_argument("--only", default=",".join(PULLERS), help="comma-separated: " + ",".join(PULLERS))
    ap.add_argument("--crms", default="hubspot,salesforce")
    ap.add_argument("--venv-dir", type=Path, default=REPO / ".bench-venvs")
    ap.add_argument("--timeout-s", type=float, default=900, help="a run longer than this is killed")
    ap.add_argument(
        "--once-over-s", type=float, default=300, help="a puller whose first run took longer runs once"
    )
    ap.add_argument(
        "--hubspot-export-rows-per-s",
        type=float,
        default=None,
        help="how fast the sandbox HubSpot writes an export file (default: as fast as it can)",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    crms = [c for c in args.crms.split(",") if c]
    latencies = [float(x) for x in args.latency_ms.split(",")]
    n = args.records
    with tempfile.TemporaryDirectory(prefix="crmhub-peers-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        seed = {"salesforce": {"Contact": n}, "hubspot": {"contacts": n}}
        with start_sandbox(tmp / "sandbox", seed_counts=seed) as sb:
            print(f"seeded {n:,} contacts per CRM in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            hs: Any = sb.hubspot
            hs.set_burst_limit(None)  # measure software, not HubSpot's pacing
            if args.hubspot_export_rows_per_s is not None:
                hs.set_export_timing(rows_per_s=args.hubspot_export_rows_per_s)
            session = Session(sb, "", tmp, args.venv_dir, args.dlt_sources, n)
            props = {"contacts": _v3_properties(session, "contacts")}
            extra = ServerThread(extras.app(props), sb.ca, name="peers-extras").start()
            session.extras_url = extra.url
            result: dict[str, Any] = {"benchmark": "peers", "records": n, "runs": args.runs, "latencies": []}
            try:
                for lat in latencies:
                    plan = FaultPlan(rules=[FaultRule(endpoint="*", latency_ms=lat)]) if lat else FaultPlan()
                    sb.salesforce.faults.set_plan(plan)
                    sb.hubspot.faults.set_plan(plan)
                    per: dict[str, dict[str, list[dict[str, Any]]]] = {
                        c: {k: [] for k in names} for c in crms
                    }
                    for r in range(args.runs):
                        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
                        for crm in crms:
                            for name in order:
                                done = per[crm][name]
                                if done and (
                                    done[-1].get("cannot_run") or done[0].get("seconds", 0) > args.once_over_s
                                ):
                                    continue  # cannot run, or too slow to repeat: one run is its median
                                row = run_puller(session, name, crm, args.timeout_s)
                                per[crm][name].append(row)
                                print(f"latency {lat:g} ms run {r + 1} {crm} {name}: {row}", file=sys.stderr)
                    result["latencies"].append(
                        {
                            "latency_ms": lat,
                            "crms": {
                                c: {k: _median_row(v) for k, v in rows.items()} for c, rows in per.items()
                            },
                        }
                    )
            finally:
                extra.stop()
                shutil.rmtree(tmp / "sandbox", ignore_errors=True)
    print(_table(result), file=sys.stderr)
    print(json.dumps(result))
