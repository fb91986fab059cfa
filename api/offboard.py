"""Tenant offboarding: revoke the OAuth grants → export → delete → crypto-shred → deletion certificate.

0. **revoke** — every connection's grant is ended at its vendor first (:mod:`services.revocation`:
   bounded retries, one ``revoke`` lineage event per connection). If a revocation failed, nothing
   else happens: :class:`RevocationIncomplete` names the connections and why, the failed ones keep
   their tokens, and running the offboarding again retries them (what was revoked stays revoked;
   nothing was deleted yet). Only ``allow_unrevoked`` goes on regardless, and the certificate then
   records each unrevoked connection as ``failed`` with its reason.
1. **export** — everything crmhub holds for the tenant, opened: staged records, dead letters, the id
   map, syncs, instructions, runs, connections (metadata only, never tokens) and the signed ledger
   report; written as JSON (mode 0600) for the controller.
2. **delete** — staging parts, dead letters, id-map rows, pending DSR exports; connections' sealed
   OAuth tokens erased (connections marked revoked); auditor tokens revoked; the tenant's web users
   and their sessions deleted (nobody logs in for it any more).
3. **crypto-shred** — :meth:`Vault.shred` destroys the tenant's data and pseudonym keys: anything
   sealed that survives elsewhere (backups) no longer opens, and pseudonyms cannot be recomputed.
4. **certificate** (format ``crmhub.offboarding.certificate/2``) — each connection with its revoke
   outcome (``revoked``, ``already_invalid``, ``not_held`` or — only with ``allow_unrevoked`` —
   ``failed``) and attempts, per-store counts, the export's SHA-256, the vault's
   :class:`~governance.vault.DeletionCertificate`, the ``erase`` lineage event's index and the signed
   checkpoint covering it; ``digest`` = sha256 of the canonical JSON of the rest.

What stays, on purpose: the tenant row, its instruction versions, sync definitions and run
metadata (counts, statuses) and the lineage ledger — records of processing without personal data
(the ledger's keyed hashes become unlinkable once the pseudonym key is gone).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from governance.lineage import CheckpointSigner, Ledger, RunRef, report_to_json
from governance.policy import ProcessingInstruction
from governance.vault import Vault
from schemas.errors import ConfigError, CrmhubError, ErrorKind
from schemas.lineage import EventKind, format_timestamp
from services.credentials import OAuthService
from services.revocation import Revocation, revoke_tenant
from store import auditors as auditor_store
from store import connections as connection_store
from store import dead_letters as dead_letter_store
from store import dsr as dsr_store
from store import id_map as id_map_store
from store import instructions as instruction_store
from store import runs as run_store
from store import staging as staging_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store import users as user_store
from store.connections import ConnectionStatus
from workflows.staging import open_part

__all__ = [
    "CERTIFICATE_FORMAT",
    "EXPORT_FORMAT",
    "RevocationIncomplete",
    "export_tenant",
    "offboard_tenant",
    "open_dead_letter",
]

EXPORT_FORMAT = "crmhub.tenant.export/1"
CERTIFICATE_FORMAT = "crmhub.offboarding.certificate/2"
"""/2: ``connections`` lists each connection's revoke outcome; ``unrevoked_allowed`` says whether the
operator let offboarding go on past a failed revocation."""


class RevocationIncomplete(CrmhubError):
    """Some grants could not be revoked at the vendor: no data was deleted, no certificate issued.

    ``failed`` are those connections' outcomes (reasons, never tokens). Fix the cause and run the
    offboarding again (it retries them), or pass ``--allow-unrevoked`` to record them unrevoked."""

    kind = ErrorKind.TRANSIENT

    def __init__(self, tenant: str, failed: list[Revocation]) -> None:
        names = "; ".join(f"{r.provider} connection {r.connection_id}: {r.reason}" for r in failed)
        super().__init__(
            f"offboarding of {tenant} stopped before deleting anything: {len(failed)} OAuth grant(s) "
            f"could not be revoked ({names}); fix that and run 'crmhub tenant offboard --tenant "
            f"{tenant}' again, or add --allow-unrevoked to offboard and record them unrevoked",
            code="revocation_incomplete",
        )
        self.failed = failed


Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``"""


def _noop(step: str, done: int, total: int) -> None:
    return None


def _ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


class _Ctx:
    """The few fields :func:`workflows.staging.open_part` reads from a SyncContext."""

    def __init__(
        self, tenant: tenant_store.TenantRow, spec: sync_store.SyncSpec, instruction: ProcessingInstruction
    ):
        self.tenant = tenant
        self.spec = spec
        self.instruction = instruction


def open_dead_letter(vault: Vault, letter: dead_letter_store.DeadLetter, purpose: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        vault.open(
            letter.tenant, letter.sealed_record, dataset="dead-letter", object_id=letter.id, purpose=purpose
        )
    )
    return body


def export_tenant(
    engine: Engine, vault: Vault, signer: CheckpointSigner, tenant: str, *, progress: Progress = _noop
) -> dict[str, Any]:
    """Everything crmhub holds for ``tenant``, opened (see the module docstring)."""
    with engine.connect() as conn:
        row = tenant_store.get_tenant(conn, tenant)
        if row is None:
            raise ConfigError(f"unknown tenant {tenant!r}")
        syncs = [
            s for sid in dsr_store.sync_ids(conn, tenant) if (s := sync_store.get_sync(conn, tenant, sid))
        ]
        versions = conn.execute(
            select(instruction_store.instructions.c.version).where(
                instruction_store.instructions.c.tenant == tenant
            )
        ).scalars()
        instructions = [
            x for v in list(versions) if (x := instruction_store.get_instruction(conn, tenant, int(v)))
        ]
        connections = connection_store.list_connections(conn, tenant=tenant)
    by_version = {i.version: i for i in instructions}
    out_syncs = []
    for n, sync in enumerate(syncs):
        spec = sync.spec
        ins_row = by_version.get(spec.instruction_version)
        ins = ProcessingInstruction.model_validate(ins_row.content) if ins_row else None
        staged: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        with engine.connect() as conn:
            names = dsr_store.tenant_staged_parts(conn, tenant, spec.id)
            dead = dead_letter_store.list_dead_letters(conn, tenant, spec.id, limit=10_000_000)
            id_rows = conn.execute(
                select(id_map_store.id_map.c.source_key_hash, id_map_store.id_map.c.destination_id).where(
                    id_map_store.id_map.c.tenant == tenant, id_map_store.id_map.c.sync_id == spec.id
                )
            ).all()
            runs = run_store.list_runs(conn, tenant, spec.id, limit=100_000)
        if ins is not None:
            ctx: Any = _Ctx(row, spec, ins)
            for i, (batch_id, number) in enumerate(names):
                with engine.connect() as conn:
                    (part,) = staging_store.get_staged(conn, tenant, batch_id, part=number)
                keys, records, deleted = open_part(vault, ctx, part)
                staged.append(
                    {
                        "batch_id": batch_id,
                        "part": number,
                        "run_id": part.run_id,
                        "keys": keys,
                        "records": records,
                        "deleted_keys": deleted,
                    }
                )
                progress(f"staging of {spec.id}", i + 1, len(names))
            for i, d in enumerate(dead):
                body = open_dead_letter(vault, d, ins.purpose)
                letters.append(
                    {
                        "id": d.id,
                        "run_id": d.run_id,
                        "error_code": d.error_code,
                        "created": _ts(d.created),
                        "key": d.record_key_hash,
                        **body,
                    }
                )
                progress(f"dead letters of {spec.id}", i + 1, len(dead))
        out_syncs.append(
            {
                "spec": spec.model_dump(mode="json"),
                "status": sync.status,
                "runs": [
                    {
                        "run_id": r.run_id,
                        "mode": r.mode,
                        "status": r.status,
                        "started": _ts(r.started),
                        "finished": _ts(r.finished),
                        "counts": r.counts,
                    }
                    for r in runs
                ],
                "staging": staged,
                "dead_letters": letters,
                "id_map": [{"source_key_hash": str(h), "destination_id": str(d)} for h, d in id_rows],
            }
        )
        progress("syncs", n + 1, len(syncs))
    ledger = Ledger(engine, tenant)
    checkpoint = ledger.checkpoint(signer)
    report = json.loads(report_to_json(ledger.export_report(checkpoint, public_key=signer.public_key)))
    return {
        "format": EXPORT_FORMAT,
        "tenant": {
            "id": row.id,
            "name": row.name,
            "home_region": row.home_region,
            "authorised_subprocessors": list(row.authorised_subprocessors),
        },
        "generated_at": format_timestamp(datetime.now(UTC)),
        "instructions": [
            {"version": i.version, "content_hash": i.content_hash, "content": i.content} for i in instructions
        ],
        "connections": [
            {"id": c.id, "provider": c.provider, "status": c.status.value, "instance_url": c.instance_url}
            for c in connections
        ],
        "syncs": out_syncs,
        "lineage_report": report,
    }


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _go_on_or_stop(
    engine: Engine, signer: CheckpointSigner, tenant: str, revocations: list[Revocation], allow: bool
) -> None:
    """Raise :class:`RevocationIncomplete` if a grant is still live, unless the operator allowed it."""
    failed = [r for r in revocations if not r.ended]
    if failed and not allow:
        Ledger(engine, tenant).checkpoint(signer)  # the revoke events so far are signed, like a run's
        raise RevocationIncomplete(tenant, failed)


def offboard_tenant(
    engine: Engine,
    vault: Vault,
    signer: CheckpointSigner,
    tenant: str,
    out_dir: Path,
    *,
    oauth: OAuthService,
    allow_unrevoked: bool = False,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Revoke, export, delete, shred, certify (see the module docstring). Returns the certificate,
    also written to ``out_dir/<tenant>-deletion-certificate.json`` next to ``<tenant>-export.json``.
    Raises :class:`RevocationIncomplete` (before deleting anything) if a grant could not be revoked
    and ``allow_unrevoked`` is not set."""
    with engine.connect() as conn:
        if tenant_store.get_tenant(conn, tenant) is None:
            raise ConfigError(f"unknown tenant {tenant!r}")
    started = datetime.now(UTC)
    run = RunRef(tenant=tenant, run_id=f"offboard:{tenant}:{format_timestamp(started)}")
    revocations = revoke_tenant(oauth, run)
    progress("grants revoked", len(revocations), len(revocations))
    _go_on_or_stop(engine, signer, tenant, revocations, allow_unrevoked)
    export = export_tenant(engine, vault, signer, tenant, progress=progress)
    blob = json.dumps(export, ensure_ascii=False, indent=1, default=str).encode()
    export_path = out_dir / f"{tenant}-export.json"
    _write_private(export_path, blob)
    # A connection made while the above ran (a user connecting a CRM meanwhile) is revoked too.
    revocations += revoke_tenant(
        oauth, run, holding_tokens_only=True, skip={r.connection_id for r in revocations}
    )
    _go_on_or_stop(engine, signer, tenant, revocations, allow_unrevoked)
    failed = [r for r in revocations if not r.ended]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        held = {
            "staged_records": sum(len(p["records"]) for s in export["syncs"] for p in s["staging"]),
            **dsr_store.delete_tenant_rows(conn, tenant),
        }
        held["dsr_exports"] = int(
            conn.execute(
                delete(auditor_store.dsr_exports).where(auditor_store.dsr_exports.c.tenant == tenant)
            ).rowcount
        )
        conns = connection_store.list_connections(conn, tenant=tenant)
        for c in conns:  # revoked ones hold no tokens any more; failed ones (allow_unrevoked) do
            if c.access_token_sealed is not None or c.refresh_token_sealed is not None:
                message = f"tenant offboarded; the grant could NOT be revoked at {c.provider}"
                connection_store.delete_tokens(conn, c.id, message, now=now)
            elif c.status is not ConnectionStatus.REVOKED:
                connection_store.delete_tokens(
                    conn, c.id, f"tenant offboarded (was {c.status.value})", now=now
                )
        held["connection_tokens"] = len(conns)
        held["auditor_tokens_revoked"] = int(
            conn.execute(
                update(auditor_store.auditor_tokens)
                .where(
                    auditor_store.auditor_tokens.c.tenant == tenant,
                    auditor_store.auditor_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            ).rowcount
        )
        held |= user_store.delete_tenant_users(conn, tenant)
    progress("deleted", 1, 1)
    keys = vault.shred(tenant)
    ledger = Ledger(engine, tenant)
    outcomes = [r.as_dict() for r in revocations]
    (index,) = ledger.append(
        [
            run.event(
                EventKind.ERASE,
                at=now,
                counts={k: v for k, v in held.items()}
                | {"keys_destroyed": keys.keys_destroyed, "grants_unrevoked": len(failed)},
                details={
                    "reason": "tenant offboarding",
                    "method": "grants revoked at the vendors; rows deleted; keys crypto-shredded",
                    "key_certificate": keys.digest,
                    "unrevoked_allowed": bool(failed),
                },
            )
        ]
    )
    checkpoint = ledger.checkpoint(signer)
    body: dict[str, Any] = {
        "format": CERTIFICATE_FORMAT,
        "tenant": tenant,
        "completed_at": format_timestamp(datetime.now(UTC)),
        "connections": outcomes,
        "unrevoked_allowed": bool(failed),
        "export": {"file": export_path.name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
        "stores": held,
        "keys": keys.model_dump(mode="json"),
        "ledger": {"erase_event_index": index, "checkpoint": checkpoint.model_dump(mode="json")},
        "kept": "tenant row, instruction versions, sync definitions, run metadata, lineage ledger "
        "(no personal data; keyed hashes unlinkable after the pseudonym key was destroyed)",
        "note": "database backups hold the wrapped keys until they expire or their KEK is destroyed",
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    body["digest"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    _write_private(out_dir / f"{tenant}-deletion-certificate.json", json.dumps(body, indent=1).encode())
    return body
