"""Governance core throughput: project + pseudonymize + seal + lineage append, per core.

The hot path of a pull activity, without the network: Salesforce-shaped contact records go
through the instruction's projection (allowlist + one pseudonymized field), are serialized and
sealed as one staging blob per batch, and one lineage event per batch (with a keyed hash of every
record id) is appended to the ledger in the database. Target (issue 4): ≥ 100,000 records/s/core.

    python -m bench governance [--records 100000] [--batch 2000] [--runs 3] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from governance.keys import LocalKeyringProvider
from governance.lineage import Ledger
from governance.policy import ProcessingInstruction, project
from governance.pseudonym import Pseudonymizer
from governance.vault import Vault
from sandbox.fake import person
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from store.engine import make_engine
from store.migrate import upgrade

TENANT = "bench"


def _records(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        p = person(1, i)
        out.append(
            {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v59.0/sobjects/Contact/003{i:015d}",
                },
                "Id": f"003{i:015d}",
                "FirstName": p.first_name,
                "LastName": p.last_name,
                "Email": p.email,
                "Phone": p.phone,
                "Title": p.title,
                "MailingCity": p.city,
                "MailingCountry": p.country,
                "Customer_Tier__c": p.tier,
                "Lead_Score__c": p.lead_score,
                "SystemModstamp": "2024-01-01T00:00:00.000+0000",
                "LastModifiedDate": "2024-01-01T00:00:00.000+0000",
                "IsDeleted": False,
            }
        )
    return out


def _instruction() -> ProcessingInstruction:
    now = datetime.now(UTC)
    return ProcessingInstruction.model_validate(
        {
            "tenant": TENANT,
            "version": 1,
            "purpose": "crm-sync",
            "data_categories": ["contact_details"],
            "allowed_fields": {
                "Contact": [
                    "Id",
                    "FirstName",
                    "LastName",
                    "Email",
                    "MailingCountry",
                    "Customer_Tier__c",
                    "SystemModstamp",
                ]
            },
            "pseudonymize": {"Contact": ["Email"]},
            "retention_days": 30,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"],
            "valid_from": now - timedelta(days=1),
        }
    )


def run(records: list[dict[str, Any]], batch: int, db_url: str, key_dir: Path) -> float:
    """Process ``records`` once; returns seconds."""
    engine = make_engine(db_url)
    vault = Vault(engine, LocalKeyringProvider(key_dir / "keyring.json"))
    pseudo = Pseudonymizer(vault)
    ledger = Ledger(engine, TENANT)
    instruction = _instruction()
    source = DatasetRef(namespace="salesforce://bench", name="Contact")
    vault.seal_batch(TENANT, b"warm-up", sync="s", batch="warm", purpose="crm-sync")  # key creation
    pseudo.pseudonymize(TENANT, "warm-up")
    started = time.perf_counter()
    for b, start in enumerate(range(0, len(records), batch)):
        chunk = records[start : start + batch]
        projected = project(chunk, instruction, "Contact", pseudonymizer=pseudo)
        blob = json.dumps(projected.records, ensure_ascii=False, separators=(",", ":")).encode()
        vault.seal_batch(TENANT, blob, sync="s1", batch=f"b{b}", purpose="crm-sync")
        hashes = tuple(pseudo.keyed_hash(TENANT, r["Id"]) for r in chunk)
        ledger.append(
            [
                LineageEvent(
                    kind=EventKind.PULL,
                    tenant=TENANT,
                    run_id="run-1",
                    sync_id="s1",
                    instruction_version=instruction.version,
                    instruction_hash=instruction.content_hash,
                    purpose=instruction.purpose,
                    source=source,
                    counts={
                        "pulled": len(chunk),
                        "withheld_values": projected.withheld_values,
                        "pseudonymized": sum(projected.pseudonymized.values()),
                    },
                    record_id_hashes=hashes,
                    subprocessor="salesforce",
                    region_from="eu",
                    region_to="eu",
                    details={"withheld_fields": ",".join(projected.withheld_fields)},
                )
            ]
        )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A migrated, empty database: the SQLite file as given, or a throwaway PostgreSQL schema."""
    if not url.startswith("postgresql"):
        upgrade(url)
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url, pooled=False)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        upgrade(scoped)
        yield scoped
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench governance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    args = ap.parse_args(argv)
    records = _records(args.records)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            with fresh_database(args.db or f"sqlite:///{tmp}/bench-{i}.db") as url:
                times.append(run(records, args.batch, url, Path(tmp) / f"keys-{i}"))
    med = statistics.median(times)
    rate = args.records / med
    print(
        json.dumps(
            {
                "benchmark": "governance-core",
                "records": args.records,
                "batch": args.batch,
                "runs": args.runs,
                "median_s": round(med, 3),
                "records_per_s": round(rate),
                "target_records_per_s": 100_000,
                "met": rate >= 100_000,
                "database": "postgresql" if args.db.startswith("postgres") else "sqlite",
            }
        )
    )


if __name__ == "__main__":
    main()
