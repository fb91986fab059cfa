"""The maintenance activities, registered under stable names: ``purge_retention``,
``check_key_rotation`` and ``watch_incidents``. All run on the control queue: they read no record
content, they only delete sealed rows past their retention, look at key metadata, and read the codec
audit and the ledgers' incident and access events.

``purge_retention``
    per tenant, one transaction: staged parts past their ``expires_at``; dead letters and id-map rows
    older than the ``retention_days`` of the tenant's latest processing instruction. Then one
    ``delete`` lineage event (details ``reason: retention``) with the counts and a signed ledger
    checkpoint — only for tenants where something was deleted, so a purge that finds nothing adds
    nothing to the ledger and a retried purge never records a deletion twice.
``check_key_rotation``
    every tenant that holds an active data key in the vault — the codec pseudo-tenant of
    ``workers.converter`` included — is rotated when its reserved uses reach a share of the vault's
    ``rotate_after`` or the key reaches a maximum age. New seals use the new version; old data
    still opens.

A tenant's deletion commits before its lineage event is appended: a worker that dies in between
leaves that one deletion unrecorded (the rows are gone either way, and the retry finds nothing to
record). ``watch_incidents`` appends the incident and notice ledger events an earlier command owed
(:func:`services.ledger_outbox.append_owed`), verifies every tenant's ledger
(:func:`services.incident_signals.ledger_failures`, what ``crmhub incident check-ledger`` does),
opening a ``ledger_verification_failed`` incident per failing tenant unless one covers that failure,
and runs the codec-token misuse check (:mod:`services.codec_misuse`, thresholds from the worker's
``codec.misuse`` settings), opening an incident per misused token unless one covers it. The
activities are idempotent and heartbeat (after each tenant; the watch after its repair and its
ledger check). Sync defs: the worker runs them on its thread pool.
Errors leave through :meth:`~workflows.context.ActivityKit.guarded`
(ConfigError/IntegrityError non-retryable, anything else retryable naming only its type).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity

from governance.lineage import RunRef
from governance.policy import ProcessingInstruction
from governance.vault import KeyInfo, TenantKeysDestroyed
from schemas.errors import IntegrityError
from schemas.lineage import EventKind, LineageEvent
from schemas.maintenance import (
    IncidentWatchInput,
    IncidentWatchResult,
    KeyRotationInput,
    KeyRotationResult,
    RetentionPurgeInput,
    RetentionPurgeResult,
    RotatedKey,
    TenantPurge,
)
from services.wiring import ActivityDeps
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import instructions as instruction_store
from store import staging as staging_store
from store import tenants as tenant_store
from workflows.context import ActivityKit

__all__ = ["MaintenanceActivities"]

_DATA = "data"
_ACTIVE = "active"


class MaintenanceActivities:
    """The activities of the maintenance workflows, bound to injected dependencies (engine, vault,
    ledger signer, clock). One instance serves every activity thread; it keeps no per-run state."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self.kit = ActivityKit(deps)

    def activities(self) -> list[Callable[..., Any]]:
        """The activities to hand to a control-queue ``Worker``."""
        return [self.purge_retention, self.check_key_rotation, self.watch_incidents]

    # ---- incident watch --------------------------------------------------------------------------

    @activity.defn(name="watch_incidents")
    def watch_incidents(self, inp: IncidentWatchInput) -> IncidentWatchResult:
        """Finish owed ledger events, verify the ledgers, check codec tokens (see the module docstring)."""
        return self.kit.guarded("watch_incidents", lambda: self._watch(inp))

    def _watch(self, inp: IncidentWatchInput) -> IncidentWatchResult:
        from services.codec_misuse import codec_findings, open_codec_incidents
        from services.incident_signals import ledger_failures, open_ledger_incidents
        from services.ledger_outbox import append_owed

        deps, now = self.deps, self.deps.clock()
        repaired = append_owed(deps.engine, now=now)
        activity.heartbeat("owed ledger events appended")
        result = IncidentWatchResult(appended=len(repaired.appended), still_owed=repaired.remaining)
        if inp.check_ledgers:
            failures = ledger_failures(deps.engine, deps.signer)
            activity.heartbeat("ledgers verified")
            opened = (
                open_ledger_incidents(deps.engine, deps.subprocessors, failures, now=now)
                if inp.open_incidents else []
            )  # fmt: skip
            result = result.model_copy(update={
                "ledger_failed": [f.tenant for f in failures],
                "ledger_opened": {f.tenant: i.row.id for f, i, new in opened if new},
                "ledger_covered": {f.tenant: i.row.id for f, i, new in opened if not new},
            })  # fmt: skip
        rules = deps.settings.codec.misuse
        found = codec_findings(deps.engine, rules, now=now)
        if not inp.open_incidents:
            return result.model_copy(update={"no_breach": [f.token_id for f in found]})
        outcomes = open_codec_incidents(deps.engine, deps.subprocessors, found, rules, now=now)
        return result.model_copy(update={
            "opened": {f.token_id: i.row.id for f, i, new in outcomes if i is not None and new},
            "covered": {f.token_id: i.row.id for f, i, new in outcomes if i is not None and not new},
            "no_breach": [f.token_id for f, i, _ in outcomes if i is None],
        })  # fmt: skip

    # ---- retention -------------------------------------------------------------------------------

    @activity.defn(name="purge_retention")
    def purge_retention(self, inp: RetentionPurgeInput) -> RetentionPurgeResult:
        """Delete, per tenant, what outlived its retention and record it in the tenant's ledger;
        returns the counts per tenant (see the module docstring)."""
        return self.kit.guarded("purge_retention", lambda: self._purge(inp))

    def _purge(self, inp: RetentionPurgeInput) -> RetentionPurgeResult:
        run_id = inp.run_id or f"retention:{activity.info().workflow_run_id}"
        with self.deps.engine.connect() as conn:
            tenants = [t.id for t in tenant_store.list_tenants(conn)]
        done: list[TenantPurge] = []
        for tenant in tenants:
            done.append(self._purge_tenant(tenant, run_id))
            activity.heartbeat(len(done))
        return RetentionPurgeResult(tenants=done)

    def _purge_tenant(self, tenant: str, run_id: str) -> TenantPurge:
        now = self.deps.clock()
        with self.deps.engine.begin() as conn:
            row = instruction_store.latest_instruction(conn, tenant)
            instruction, note = _usable(row)
            staging = staging_store.purge_expired_staging(conn, now=now, tenant=tenant)
            letters = ids = 0
            if instruction is not None:
                before = now - timedelta(days=instruction.retention_days)
                letters = dead_letter_store.purge_dead_letters(conn, tenant, before=before)
                ids = id_map_store.purge_id_map(conn, tenant, before=before)
        result = TenantPurge(
            tenant=tenant,
            staging_parts=staging,
            dead_letters=letters,
            id_map_rows=ids,
            retention_days=instruction.retention_days if instruction else None,
            instruction_version=instruction.version if instruction else None,
            note=note,
        )
        if note:
            activity.logger.warning("retention purge of tenant %s: %s", tenant, note)
        if result.total == 0:
            return result
        self.kit.append(tenant, [self._event(tenant, run_id, result, instruction, now)])
        self.kit.ledger(tenant).checkpoint(self.deps.signer)
        return result.model_copy(update={"recorded": True})

    @staticmethod
    def _event(
        tenant: str,
        run_id: str,
        result: TenantPurge,
        instruction: ProcessingInstruction | None,
        now: datetime,
    ) -> LineageEvent:
        return RunRef.of(tenant, run_id, instruction=instruction).event(
            EventKind.DELETE,
            at=now,
            counts={
                "staging_parts": result.staging_parts,
                "dead_letters": result.dead_letters,
                "id_map_rows": result.id_map_rows,
            },
            details={
                "reason": "retention",
                "retention_days": result.retention_days,
                "method": "rows deleted (sealed content, keyed hashes)",
            },
        )

    # ---- key rotation ----------------------------------------------------------------------------

    @activity.defn(name="check_key_rotation")
    def check_key_rotation(self, inp: KeyRotationInput) -> KeyRotationResult:
        """Rotate every active data key past the use share or the maximum age; returns what was
        looked at and what was rotated (never key material)."""
        return self.kit.guarded("check_key_rotation", lambda: self._check_keys(inp))

    def _check_keys(self, inp: KeyRotationInput) -> KeyRotationResult:
        vault = self.deps.vault
        now = self.deps.clock()
        limit = int(vault.rotate_after * inp.use_share)
        max_age = timedelta(days=inp.max_age_days)
        active = [k for k in vault.list_keys() if k.kind == _DATA and k.status == _ACTIVE]
        rotated: list[RotatedKey] = []
        skipped: list[str] = []
        for key in sorted(active, key=lambda k: k.tenant):
            reason = _rotation_reason(key, now, uses_limit=limit, max_age=max_age)
            if reason is not None:
                try:
                    version = vault.rotate(key.tenant)
                except TenantKeysDestroyed:  # shredded since list_keys: nothing left to protect
                    skipped.append(key.tenant)
                else:
                    rotated.append(
                        RotatedKey(
                            tenant=key.tenant,
                            old_version=key.version,
                            new_version=version,
                            reason=reason,
                            uses_reserved=key.uses_reserved,
                            age_days=(now - key.created_at).days,
                        )
                    )
                    activity.logger.info(
                        "rotated the data key of %s: v%d → v%d (%s)", key.tenant, key.version, version, reason
                    )
            activity.heartbeat(key.tenant)
        return KeyRotationResult(checked=len(active), rotated=rotated, skipped=skipped)


def _rotation_reason(key: KeyInfo, now: datetime, *, uses_limit: int, max_age: timedelta) -> str | None:
    """``uses`` when the key's reserved uses reached ``uses_limit``, ``age`` when it is ``max_age`` old,
    else None."""
    if key.uses_reserved >= uses_limit:
        return "uses"
    if now - key.created_at >= max_age:
        return "age"
    return None


def _usable(row: instruction_store.InstructionRow | None) -> tuple[ProcessingInstruction | None, str]:
    """The stored instruction, checked like a run checks it; else None and why (no PII)."""
    if row is None:
        return None, "no processing instruction stored: dead letters and id map kept"
    try:
        instruction = ProcessingInstruction.from_stored(
            row.content, content_hash=row.content_hash, version=row.version, tenant=row.tenant
        )
    except IntegrityError as exc:
        return None, f"{exc.message}: dead letters and id map kept"
    return instruction, ""
