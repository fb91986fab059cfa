"""Sync activity throughput: N Salesforce contacts → HubSpot through plan / pull_batch / push_batch.

Everything real except Temporal: the activities run in ``ActivityEnvironment`` (same thread, no
history round trips), against both sandbox CRMs over HTTPS on loopback, a migrated SQLite (or
``--db-url``) database, the vault and the lineage ledger. Reports, per run, records/s of pull+stage
(read_page → project → pseudonymize → seal → stage → lineage) and of push (open → map → upsert →
id map → lineage → delete staging), with vendor calls; every run must land each contact exactly once.

    python -m bench.sync_activities [--contacts 10000] [--runs 3] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from temporalio.testing import ActivityEnvironment

from governance.keys import LocalKeyringProvider
from governance.lineage import CheckpointSigner
from governance.policy import ProcessingInstruction
from governance.pseudonym import Pseudonymizer
from governance.registry import load_registry
from governance.vault import Vault
from sandbox.runtime import start_sandbox
from schemas.settings import load_settings
from schemas.sync import PlanInput, PullInput, PushInput, SyncWriteMode
from services.credentials import OAuthService
from services.wiring import ActivityDeps, connector_factory, credentials, default_subprocessors_file
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.engine import make_engine
from store.migrate import upgrade
from workflows.activities import SyncActivities

TENANT = "bench"
INSTRUCTION: dict[str, Any] = {
    "tenant": TENANT,
    "version": 1,
    "purpose": "crm_sync",
    "allowed_fields": {"Contact": ["Id", "Email", "FirstName", "LastName", "Phone", "Title"]},
    "pseudonymize": {"Contact": ["Phone"]},
    "retention_days": 7,
    "permitted_regions": ["eea"],
    "permitted_subprocessors": ["salesforce", "hubspot"],
    "valid_from": "2025-01-01T00:00:00Z",
}
MAPPING = {
    "Email": "email",
    "FirstName": "firstname",
    "LastName": "lastname",
    "Phone": "phone",
    "Title": "jobtitle",
}


def _connect(oauth: OAuthService, vendor: Any, provider: str) -> str:
    req = oauth.begin_authorization(TENANT, provider)
    q = {k: v[0] for k, v in parse_qs(urlsplit(req.url).query).items()}
    code = vendor.oauth.issue_code(
        q["client_id"], req.redirect_uri, scope=q["scope"], code_challenge=q["code_challenge"],
        code_challenge_method="S256",
    )  # fmt: skip
    return oauth.complete_authorization(
        provider, tenant=TENANT, state=req.state, code=code, redirect_uri=req.redirect_uri
    ).id


def run_once(n: int, db_url: str | None, workdir: Path, keyring: Path) -> dict[str, float]:
    url = db_url or f"sqlite:///{workdir / 'crmhub.db'}"
    upgrade(url)
    engine = make_engine(url)
    vault = Vault(engine, LocalKeyringProvider(keyring))
    data_dir = workdir / "data"
    with start_sandbox(data_dir, seed_counts={"salesforce": {"Contact": n}}) as sb:
        settings = load_settings(data_dir=data_dir, database_url=url)  # the sandbox's clients file
        oauth = credentials(settings, engine, vault)
        sf, hs = _connect(oauth, sb.salesforce, "salesforce"), _connect(oauth, sb.hubspot, "hubspot")
        deps = ActivityDeps(
            settings=settings,
            engine=engine,
            vault=vault,
            pseudonymizer=Pseudonymizer(vault),
            subprocessors=load_registry(default_subprocessors_file()),
            signer=CheckpointSigner.generate(),
            connector_factory=connector_factory(settings, engine, oauth),
        )
        instruction = ProcessingInstruction.model_validate(INSTRUCTION)
        now = datetime.now(UTC)
        sync_id = f"contacts-{time.time_ns()}"
        with engine.begin() as conn:
            if tenant_store.get_tenant(conn, TENANT) is None:
                tenant_store.create_tenant(
                    conn, id=TENANT, name="bench", home_region="eea",
                    authorised_subprocessors=["salesforce", "hubspot"], now=now,
                )  # fmt: skip
            instruction_store.add_instruction(
                conn, tenant=TENANT, version=1, content=instruction.model_dump(mode="json"),
                content_hash=instruction.content_hash, now=now,
            )  # fmt: skip
            sync_store.create_sync(
                conn,
                sync_store.SyncSpec(
                    tenant=TENANT, id=sync_id, source_connection_id=sf, source_stream="Contact",
                    source_endpoint="eu", destination_connection_id=hs, destination_stream="contacts",
                    destination_endpoint="eu1", mapping=MAPPING, destination_id_property="email",
                    source_key_property="Email", instruction_version=1,
                    write_mode=SyncWriteMode.MIRROR,
                ),
                now=now,
            )  # fmt: skip
        acts = SyncActivities(deps)
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *_: None
        plan = env.run(acts.plan_sync, PlanInput(tenant=TENANT, sync_id=sync_id, run_id=f"run-{sync_id}"))
        state, seq, batches = plan.start_state, 0, []
        t0 = time.perf_counter()
        while True:
            batch = env.run(acts.pull_batch, PullInput(plan=plan, state=state, batch_seq=seq))
            batches.append(batch)
            state, seq = batch.next_state, seq + 1
            if not batch.has_more:
                break
        pull_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = [env.run(acts.push_batch, PushInput(plan=plan, batch=b)) for b in batches]
        push_s = time.perf_counter() - t0
        hs_handle: Any = sb.hubspot
        landed = len(hs_handle.live_records("contacts"))
        oauth.close()
    engine.dispose()
    pulled = sum(b.records for b in batches)
    pushed = sum(r.pushed for r in results)
    if not pulled == pushed == landed == n:
        raise SystemExit(f"wrong counts: pulled {pulled}, pushed {pushed}, at HubSpot {landed}, seeded {n}")
    return {
        "pull_stage_rps": n / pull_s,
        "push_rps": n / push_s,
        "pull_s": pull_s,
        "push_s": push_s,
        "batches": len(batches),
        "source_calls": sum(b.calls for b in batches),
        "destination_calls": sum(r.calls for r in results),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.sync_activities")
    ap.add_argument("--contacts", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db-url", default=None, help="default: a fresh SQLite file per run")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as keys:  # one keyring: a --db-url database outlives a run
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(run_once(args.contacts, args.db_url, Path(tmp), Path(keys) / "keyring.json"))
    summary = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
    print(json.dumps({"contacts": args.contacts, "runs": args.runs, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
