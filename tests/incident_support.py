"""Lineage of three tenants for the breach-incident tests (tests/services, tests/api): tenants,
instructions, connections and syncs in the store, pull and push events in their ledgers."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from api.demo import demo_instruction
from governance.keys import LocalKeyringProvider
from governance.lineage import Ledger, RunRef
from governance.registry import Registry, load_registry
from governance.vault import Vault
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from services.wiring import default_subprocessors_file
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store

__all__ = ["ACME", "GLOBEX", "HOUR", "INITECH", "hashes", "pull_event", "registry", "seed", "seeded_vault"]

HOUR = timedelta(hours=1)
ACME, GLOBEX, INITECH = "acme", "globex", "initech"


def hashes(tenant: str, n: int, first: int = 0) -> list[str]:
    return [hashlib.sha256(f"{tenant}-{i}".encode()).hexdigest() for i in range(first, first + n)]


def pull_event(tenant: str, at: datetime, hashes: list[str], *, records: int | None = None) -> LineageEvent:
    ins = demo_instruction(tenant)
    return RunRef.of(tenant, f"run-{at:%H%M}", sync_id="contacts", instruction=ins).event(
        EventKind.PULL, at=at, source=DatasetRef(namespace="salesforce://sandbox", name="Contact"),
        destination=DatasetRef(namespace="crmhub-staging", name="contacts"), record_id_hashes=hashes,
        counts={"records": len(hashes) if records is None else records}, subprocessor="salesforce",
    )  # fmt: skip


def _push(tenant: str, at: datetime, hashes: list[str]) -> LineageEvent:
    ins = demo_instruction(tenant)
    return RunRef.of(tenant, f"run-{at:%H%M}", sync_id="contacts", instruction=ins).event(
        EventKind.PUSH, at=at, source=DatasetRef(namespace="crmhub-staging", name="contacts"),
        destination=DatasetRef(namespace="hubspot://sandbox", name="contacts"), record_id_hashes=hashes,
        counts={"pushed": len(hashes)}, subprocessor="hubspot",
    )  # fmt: skip


def seed(engine: Engine, t0: datetime) -> None:
    """Three tenants, each with instruction v1, two connections and the ``contacts`` sync; ledgers:
    acme read and wrote 5 records at t0+1h; globex read 3 then 2 (one again: 4 subjects, 5 records)
    at t0+2h/3h; initech read 7 two days before t0."""
    with engine.begin() as conn:
        for tenant in (ACME, GLOBEX, INITECH):
            tenant_store.create_tenant(
                conn, id=tenant, name=tenant, home_region="eea",
                authorised_subprocessors=["salesforce", "hubspot"], now=t0 - 10 * HOUR,
            )  # fmt: skip
            ins = demo_instruction(tenant)
            instruction_store.add_instruction(
                conn, tenant=tenant, version=1, content=ins.model_dump(mode="json"),
                content_hash=ins.content_hash, now=t0,
            )  # fmt: skip
            for provider in ("salesforce", "hubspot"):
                connection_store.insert_connection(
                    conn, id=f"{provider[:2]}-{tenant}", tenant=tenant, provider=provider, instance_url=None,
                    scopes=[], access_token_sealed=b"x", refresh_token_sealed=b"x", access_expires_at=None,
                    now=t0 - 5 * HOUR,
                )  # fmt: skip
            sync_store.create_sync(
                conn,
                sync_store.SyncSpec(
                    tenant=tenant, id="contacts", source_connection_id=f"sa-{tenant}",
                    source_stream="Contact", destination_connection_id=f"hu-{tenant}",
                    destination_stream="contacts",
                    mapping={"Email": "email"}, destination_id_property="email", source_key_property="Email",
                    instruction_version=1,
                ),
                now=t0,
            )  # fmt: skip
    # acme: 5 records read and written in the window; globex: 3, then 2 more of which 1 again
    # (4 subjects, 5 records), read only; initech: read two days before the window.
    Ledger(engine, ACME).append(
        [pull_event(ACME, t0 + HOUR, hashes(ACME, 5)), _push(ACME, t0 + HOUR, hashes(ACME, 5))]
    )
    Ledger(engine, GLOBEX).append(
        [
            pull_event(GLOBEX, t0 + 2 * HOUR, hashes(GLOBEX, 3)),
            pull_event(GLOBEX, t0 + 3 * HOUR, hashes(GLOBEX, 2, 2)),
        ]
    )
    Ledger(engine, INITECH).append([pull_event(INITECH, t0 - 48 * HOUR, hashes(INITECH, 7))])


@pytest.fixture
def registry() -> Registry:
    """The subprocessor registry crmhub ships."""
    return load_registry(default_subprocessors_file())


def seeded_vault(engine: Engine, tmp_path: Path, t0: datetime) -> Vault:
    """:func:`seed` at ``t0``, and a vault over a keyring in ``tmp_path``."""
    seed(engine, t0)
    return Vault(engine, LocalKeyringProvider(tmp_path / "keyring.json"))
