"""crmhub's overhead over the floor: a Salesforce → HubSpot sync of N contacts through the whole stack,
side by side with the same copy done by a plain script with the bare client libraries.

One session, one sandbox (both CRMs over HTTPS on loopback, N seeded Salesforce contacts), one
Temporal dev server; for each ``--latency-ms`` (injected on every sandbox call, both CRMs) and each
of ``--runs`` rounds, HubSpot is emptied and then

- **floor** — :mod:`bench.sync_floor` in a child process: simple-salesforce ``query_all_iter`` →
  hubspot-api-client batch upsert, 100 per call, no governance, no Temporal;
- **crmhub** — a fresh ``python -m api worker --region eu`` process, then a full run of the demo's
  sync (OAuth connections, instruction with projection and a pseudonymized field, plan, pull →
  project → pseudonymize → seal → stage → lineage, push → per-record results → id map → lineage),
  started with :func:`api.syncops.start` and timed until the workflow's result.

Per run: seconds, records landed at HubSpot (must be N for both), vendor calls per endpoint (the
sandbox call logs), the worker's peak RSS (``VmHWM``), and the Temporal footprint of the run's whole
continue-as-new chain: events per execution, the largest payload as stored, and whether any
seeded e-mail address appears in a decoded payload (record data must never enter history).
Reports medians and the ratio crmhub ÷ floor of the medians, as one JSON document.

The HubSpot sandbox's burst limit (190 requests / 10 s, as a private app) is off by default so the
benchmark measures software, not the vendor's pacing; ``--hubspot-burst-limit 190`` turns it on.

    python -m bench sync-overhead [--contacts 100000] [--runs 3] [--latency-ms 0,50]
        [--worker-setting pages_per_activity=50 ...] [--only crmhub|floor] [--db-url URL]
        [--hubspot-burst-limit 190] [--floor-module bench.sync_floor] [--faithful [--faithful-updates K]]

``--faithful`` runs everything with the vendors' production faults on (:mod:`sandbox.faithful`) and,
after the last crmhub run, :mod:`bench.faithful_phase`: K contacts updated with Salesforce's late
commits on and two merges, then two incremental runs, timed and counted.

Peers (issue 8, item 6) plug in through ``--floor-module``: a module run as ``python -m MODULE JSON``
that copies the sandbox's contacts to HubSpot and prints ``{"seconds", "records", "peak_rss"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api import syncops
from api.demo import connect_crm, create_demo_sync
from bench import faithful_phase
from bench.sync_floor import peak_rss_bytes
from sandbox import faithful
from sandbox.faults import FaultPlan, FaultRule
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings, load_settings
from schemas.sync import SyncMode, sync_workflow_id
from services.wiring import credentials
from store.migrate import upgrade
from workers.client import Connected, connect
from workers.devserver import temporal_binary
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

__all__ = ["Session", "footprint", "main", "minimum_calls", "record_emails", "running_worker"]

TENANT = "bench"
REPO = Path(__file__).resolve().parent.parent
HISTORY_EVENT_LIMIT = 10_240
PAYLOAD_LIMIT = 256 * 1024
_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def minimum_calls(n: int) -> dict[str, int]:
    """The platform minimum for copying ``n`` contacts: Salesforce query pages of 2,000 (a Bulk 2.0
    job reads the same in result sets) and HubSpot batch upserts of 100."""
    return {"salesforce_query_pages": math.ceil(n / 2000), "hubspot_batch_upserts": math.ceil(n / 100)}


@dataclass
class Session:
    """Everything one benchmark session shares: sandbox, dev server, database, connections."""

    tmp: Path
    settings: Settings
    sandbox: RunningSandbox
    connected: Connected
    sf_connection: str
    hs_connection: str
    contacts: int
    loop: asyncio.AbstractEventLoop

    @property
    def sf(self) -> Any:
        return self.sandbox.salesforce

    @property
    def hs(self) -> Any:
        return self.sandbox.hubspot

    def reset_destination(self) -> None:
        """Empty HubSpot's contacts (and give their space back: a store that has just held and lost
        1M rows answers ~1.5x slower than a fresh one) and both call logs, so every run creates all N
        on an equal footing."""
        self.hs.store.purge_all("contacts")
        self.sf.calls.clear()
        self.hs.calls.clear()

    def set_latency(self, ms: float) -> None:
        plan = FaultPlan(rules=[FaultRule(endpoint="*", latency_ms=ms)]) if ms else FaultPlan()
        self.sf.faults.set_plan(plan)
        self.hs.faults.set_plan(plan)

    def landed(self) -> int:
        return int(self.hs.store.count("contacts", "deleted = 0"))

    def call_counts(self) -> dict[str, dict[str, int]]:
        return {"salesforce": self.sf.calls.counts(), "hubspot": self.hs.calls.counts()}


@contextmanager
def open_session(contacts: int, db_url: str | None, hubspot_burst_limit: int | None) -> Iterator[Session]:
    """Dev server, migrated database, sandbox with ``contacts`` seeded, both CRMs connected by OAuth."""
    with tempfile.TemporaryDirectory(prefix="crmhub-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        url = db_url or f"sqlite:///{data_dir / 'crmhub.db'}"
        upgrade(url)
        loop = asyncio.new_event_loop()
        env = loop.run_until_complete(
            WorkflowEnvironment.start_local(
                dev_server_existing_path=str(temporal_binary()),
                search_attributes=SEARCH_ATTRIBUTES,
                dev_server_extra_args=["--ui-disable-news-fetch", "--headless"],
            )
        )
        suffix = uuid.uuid4().hex[:8]
        settings = load_settings(
            data_dir=data_dir,
            database_url=url,
            temporal={
                "address": env.client.service_client.config.target_host,
                "control_task_queue": f"bench-control-{suffix}",
            },
            regions={
                "eu": {"task_queue": f"bench-eu-{suffix}", "jurisdiction": "EEA"},
                "us": {"task_queue": f"bench-us-{suffix}", "jurisdiction": "US"},
            },
        )
        try:
            with start_sandbox(data_dir, seed_counts={"salesforce": {"Contact": contacts}}) as sb:
                hs: Any = sb.hubspot
                hs.set_burst_limit(hubspot_burst_limit)
                connected = loop.run_until_complete(connect(settings))
                oauth = credentials(settings, connected.engine, connected.vault)  # the sandbox's clients file
                try:
                    sf_conn = connect_crm(oauth, TENANT, "salesforce", sb.ca)
                    hs_conn = connect_crm(oauth, TENANT, "hubspot", sb.ca)
                finally:
                    oauth.close()
                session = Session(tmp, settings, sb, connected, sf_conn, hs_conn, contacts, loop)
                try:
                    yield session
                finally:
                    connected.engine.dispose()
        finally:
            loop.run_until_complete(env.shutdown())
            loop.close()


# -- the floor --------------------------------------------------------------------------------------


def run_floor(s: Session, module: str = "bench.sync_floor") -> dict[str, Any]:
    """Run ``module`` (the bare-client floor, or a peer with the same interface: one JSON argument
    with the sandbox's URLs, tokens and CA; one JSON line out with ``seconds``, ``records`` and
    ``peak_rss``) as a child process against an empty HubSpot."""
    s.reset_destination()
    args = {
        "sf_url": s.sandbox.info.salesforce_url,
        "sf_token": s.sf.issue_token(),
        "hs_url": s.sandbox.info.hubspot_url,
        "hs_token": s.hs.issue_private_app_token(),
        "ca": s.sandbox.info.ca_path,
    }
    proc = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", module, json.dumps(args)],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the floor script failed: {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["landed"] = s.landed()
    out["calls"] = s.call_counts()
    if not out["records"] == out["landed"] == s.contacts:
        raise SystemExit(f"floor: sent {out['records']}, at HubSpot {out['landed']}, seeded {s.contacts}")
    return out


# -- crmhub -----------------------------------------------------------------------------------------


def _worker_env(s: Session, worker_settings: dict[str, str]) -> dict[str, str]:
    st = s.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CRMHUB_DATA_DIR": str(st.data_dir),
            "CRMHUB_DATABASE_URL": st.effective_database_url,
            "CRMHUB_TEMPORAL__ADDRESS": st.temporal.address,
            "CRMHUB_TEMPORAL__CONTROL_TASK_QUEUE": st.temporal.control_task_queue,
            "CRMHUB_REGIONS__EU__TASK_QUEUE": st.task_queue("eu"),
            "CRMHUB_REGIONS__US__TASK_QUEUE": st.task_queue("us"),
            "CRMHUB_LOG_LEVEL": "WARNING",
        }
    )
    for key, value in worker_settings.items():
        env[f"CRMHUB_WORKER__{key.upper()}"] = value
    return env


async def _wait_for_pollers(client: Client, settings: Settings, proc: subprocess.Popen[bytes]) -> None:
    """Until the worker process ``proc`` polls both its queues (the SDK's identity is ``pid@host``)."""
    queues = [
        (settings.temporal.control_task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (settings.task_queue("eu"), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode}")
        ready = 0
        for name, kind in queues:
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace, task_queue=TaskQueue(name=name), task_queue_type=kind
                )
            )
            # Pollers of an earlier worker stay listed for a while: wait for this process's own.
            ready += any(p.identity.startswith(f"{proc.pid}@") for p in resp.pollers)
        if ready == len(queues):
            return
        await asyncio.sleep(0.2)
    raise SystemExit("the worker did not start polling within 120 s")


@asynccontextmanager
async def running_worker(
    s: Session, name: str, worker_settings: dict[str, str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A fresh ``python -m api worker --region eu`` process, polling both its queues, stopped at exit."""
    log = (s.tmp / f"worker-{name}.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - this interpreter; returns at once
        [sys.executable, "-m", "api", "worker", "--region", "eu"],
        cwd=s.tmp, env=_worker_env(s, worker_settings), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await _wait_for_pollers(s.connected.client, s.settings, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _crmhub_run(s: Session, sync_id: str, worker_settings: dict[str, str]) -> dict[str, Any]:
    client = s.connected.client
    async with running_worker(s, sync_id, worker_settings) as proc:
        idle_rss = peak_rss_bytes(proc.pid)
        t0 = time.perf_counter()
        handle = await syncops.start(
            client, TENANT, sync_id, mode=SyncMode.FULL, task_queue=s.settings.temporal.control_task_queue
        )
        counts = await handle.result()
        seconds = time.perf_counter() - t0
        peak = peak_rss_bytes(proc.pid)
    run_id = handle.first_execution_run_id or handle.result_run_id
    assert run_id is not None
    return {
        "seconds": seconds,
        "pulled": counts.pulled,
        "pushed": counts.pushed,
        "failed": counts.failed,
        "batches": counts.batches,
        "worker_idle_rss": idle_rss,
        "worker_peak_rss": peak,
        "workflow_id": sync_workflow_id(TENANT, sync_id),
        "first_run_id": run_id,
    }


def run_crmhub(
    s: Session, sync_id: str, worker_settings: dict[str, str], emails: set[bytes]
) -> dict[str, Any]:
    s.reset_destination()
    create_demo_sync(
        s.connected.engine, tenant=TENANT, sf_connection=s.sf_connection, hs_connection=s.hs_connection,
        sync_id=sync_id,
    )  # fmt: skip
    loop = s.loop
    out = loop.run_until_complete(_crmhub_run(s, sync_id, worker_settings))
    out["landed"] = s.landed()
    out["calls"] = s.call_counts()
    if not out["pulled"] == out["pushed"] == out["landed"] == s.contacts or out["failed"]:
        raise SystemExit(
            f"crmhub: pulled {out['pulled']}, pushed {out['pushed']}, failed {out['failed']}, "
            f"at HubSpot {out['landed']}, seeded {s.contacts}"
        )
    out["temporal"] = loop.run_until_complete(
        footprint(s.connected.client, out["workflow_id"], out["first_run_id"], emails)
    )
    return out


# -- Temporal footprint ------------------------------------------------------------------------------


def record_emails(data: bytes, emails: set[bytes]) -> set[bytes]:
    """The e-mail addresses in ``data`` that belong to seeded records (``emails``, lower case)."""
    return {m.lower() for m in _EMAIL.findall(data) if m.lower() in emails}


def _payloads(msg: Message) -> Iterator[Payload]:
    """Every Payload inside a history event (inputs, results, heartbeat details, memos, failures)."""
    if isinstance(msg, Payload):
        yield msg
        return
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            yield from _payloads(value)
            continue
        items = value.values() if hasattr(value, "values") else value  # a map, or a repeated field
        for item in items:
            if isinstance(item, Message):
                yield from _payloads(item)


async def footprint(
    client: Client, workflow_id: str, first_run_id: str, emails: set[bytes]
) -> dict[str, Any]:
    """Walk a run's continue-as-new chain from its first execution: events per execution, the largest
    payload as stored (encrypted), and seeded e-mail addresses found in decoded payloads."""
    codec = client.data_converter.payload_codec
    executions: list[int] = []
    largest = largest_decoded = payload_count = 0
    leaked: set[bytes] = set()
    scheduled: dict[int, str] = {}  # scheduled event id → activity type, per execution
    started: dict[int, float] = {}
    durations: dict[str, list[float]] = {}
    run_id: str | None = first_run_id
    while run_id:
        scheduled.clear()
        started.clear()
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        executions.append(len(history.events))
        run_id = None
        for event in history.events:
            found = list(_payloads(event))
            payload_count += len(found)
            largest = max([largest, *(p.ByteSize() for p in found)])
            decoded = await codec.decode(found) if codec and found else found
            for p in decoded:
                largest_decoded = max(largest_decoded, p.ByteSize())
                leaked |= record_emails(p.data, emails)
            _time_activity(event, scheduled, started, durations)
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                run_id = event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return {
        "executions": len(executions),
        "events_total": sum(executions),
        "events_max_per_execution": max(executions),
        "payloads": payload_count,
        "largest_payload_bytes": largest,
        "largest_decoded_payload_bytes": largest_decoded,
        "record_emails_in_history": len(leaked),
        "activities": {name: _spread(d) for name, d in sorted(durations.items())},
    }


def _time_activity(
    event: Any, scheduled: dict[int, str], started: dict[int, float], durations: dict[str, list[float]]
) -> None:
    """Collect start-to-close seconds of every completed activity, by type."""
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
        started[event.activity_task_started_event_attributes.scheduled_event_id] = (
            event.event_time.ToNanoseconds()
        )
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        sid = event.activity_task_completed_event_attributes.scheduled_event_id
        if sid in scheduled and sid in started:
            seconds = (event.event_time.ToNanoseconds() - started[sid]) / 1e9
            durations.setdefault(scheduled[sid], []).append(seconds)


def _spread(seconds: list[float]) -> dict[str, float]:
    """Count, total and the mean of the first and last tenth (does an activity slow down as N grows?)."""
    tenth = max(len(seconds) // 10, 1)
    return {
        "count": len(seconds),
        "total_s": round(sum(seconds), 2),
        "first_tenth_mean_s": round(statistics.fmean(seconds[:tenth]), 3),
        "last_tenth_mean_s": round(statistics.fmean(seconds[-tenth:]), 3),
    }


# -- the report -------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def summarize(
    n: int, latency: float, floor: list[dict[str, Any]], crm: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_ms": latency, "runs": max(len(floor), len(crm))}
    if floor:
        f = _median(floor, "seconds")
        out["floor"] = {
            "seconds": round(f, 2), "records_per_s": round(n / f),
            "peak_rss_mb": round(_median(floor, "peak_rss") / 2**20),
            "all_seconds": [round(r["seconds"], 2) for r in floor], "calls": floor[-1]["calls"],
        }  # fmt: skip
    if crm:
        c = _median(crm, "seconds")
        last = crm[-1]
        sf_calls, hs_calls = last["calls"]["salesforce"], last["calls"]["hubspot"]
        out["crmhub"] = {
            "seconds": round(c, 2), "records_per_s": round(n / c),
            "all_seconds": [round(r["seconds"], 2) for r in crm],
            "worker_peak_rss_mb": round(_median(crm, "worker_peak_rss") / 2**20),
            "worker_idle_rss_mb": round(_median(crm, "worker_idle_rss") / 2**20),
            "batches": last["batches"], "calls": last["calls"],
            "salesforce_calls": sum(sf_calls.values()), "hubspot_calls": sum(hs_calls.values()),
            "temporal": last["temporal"],
        }  # fmt: skip
    if floor and crm:
        out["ratio"] = round(out["crmhub"]["seconds"] / out["floor"]["seconds"], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench sync-overhead")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", default="0,50", help="comma-separated; each is one round of runs")
    ap.add_argument("--only", choices=["crmhub", "floor"], default=None)
    ap.add_argument("--worker-setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a settings.worker override for the worker, e.g. pages_per_activity=50")  # fmt: skip
    ap.add_argument("--floor-module", default="bench.sync_floor",
                    help="the reference run in a child process; a peer (dlt, Airbyte, a Singer tap) wrapped "
                    "with bench.sync_floor's interface goes here")  # fmt: skip
    ap.add_argument("--hubspot-burst-limit", type=int, default=0, help="requests per 10 s; 0 = off")
    ap.add_argument("--crmhub-first", action="store_true", help="crmhub before the floor in the first run")
    ap.add_argument("--db-url", default=None)
    ap.add_argument("--faithful", action="store_true",
                    help="every vendor fault rule on (sandbox.faithful), then an incremental phase with "
                    "late commits and merges after the last crmhub run (bench.faithful_phase)")  # fmt: skip
    ap.add_argument("--faithful-updates", type=int, default=0, help="contacts updated (default N/100)")
    args = ap.parse_args(argv)
    n = args.contacts
    worker_settings = dict(kv.split("=", 1) for kv in args.worker_setting)
    latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]
    report: dict[str, Any] = {
        "benchmark": "sync-overhead", "contacts": n, "worker_settings": worker_settings,
        "hubspot_burst_limit": args.hubspot_burst_limit or None, "minimum_calls": minimum_calls(n),
        "limits": {"history_events": HISTORY_EVENT_LIMIT, "payload_bytes": PAYLOAD_LIMIT}, "latencies": [],
        "faithful": args.faithful,
    }  # fmt: skip
    t0 = time.perf_counter()
    with open_session(n, args.db_url, args.hubspot_burst_limit or None) as s:
        report["setup_s"] = round(time.perf_counter() - t0, 1)
        if args.faithful:
            faithful.turn_on(s.sandbox)  # Salesforce's late commits: the phase below turns them on
        last_sync: str | None = None
        emails = {str(r["Email"]).lower().encode() for r in s.sf.live_records("Contact")}
        for latency in latencies:
            s.set_latency(latency)
            floor: list[dict[str, Any]] = []
            crm: list[dict[str, Any]] = []
            for i in range(args.runs):  # alternate, so drift in the machine hits both alike
                sides = ["floor", "crmhub"] if (i + args.crmhub_first) % 2 == 0 else ["crmhub", "floor"]
                for side in sides:
                    if side == "floor" and args.only != "crmhub":
                        floor.append(run_floor(s, args.floor_module))
                        last_sync = None  # the floor's copy is at HubSpot now, not crmhub's
                    if side == "crmhub" and args.only != "floor":
                        last_sync = f"overhead-{int(latency)}ms-{i}"
                        crm.append(run_crmhub(s, last_sync, worker_settings, emails))
            report["latencies"].append(summarize(n, latency, floor, crm))
            print(json.dumps(report["latencies"][-1]), file=sys.stderr, flush=True)
        s.set_latency(0)
        if args.faithful:  # last: its merges change the source for good
            updates = args.faithful_updates or max(n // 100, 10)
            sync = last_sync
            report["faithful_incremental"] = (
                "skipped: the last run was not crmhub's"
                if sync is None
                else faithful_phase.run(
                    s, TENANT, sync, lambda: running_worker(s, f"{sync}-faithful", worker_settings), updates
                )
            )
            print(json.dumps(report["faithful_incremental"]), file=sys.stderr, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
