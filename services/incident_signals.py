"""Detection signals that open a breach incident by themselves (:mod:`services.incidents`).

- :func:`ledger_failures` checks every tenant's live ledger as an auditor would: the stored ledger
  extends the latest checkpoint in the signer's journal (kept beside the signing key, out of the
  database's reach), entries past the last checkpoint recompute their stored leaves, and the signed
  report up to that checkpoint verifies (:func:`governance.lineage.verify`: every leaf recomputed from
  its event bytes, signatures, consistency proofs). A failure means someone altered what crmhub
  recorded: :func:`open_ledger_incidents` opens one ``ledger_verification_failed`` incident per
  failing tenant (nature ``alteration``) unless one of that signal already covers it: still open
  (not notified) for the tenant, or opened for this very failure (same tenant and reason), so the
  ``crmhub-incident-watch`` schedule, which runs this check every pass, opens one incident a failure.
- :func:`credential_window` is the default window of a ``leaked_credential`` report on connections:
  from the oldest connection's creation (a leaked token could have been used since) to now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from governance.lineage import CheckpointSigner, Ledger, verify
from governance.registry import Registry
from schemas.errors import ConfigError, IntegrityError
from services.incident_scope import Scope
from services.incidents import Incident, Nature, Signal, list_incidents, open_incident
from store import connections as connection_store
from store import tenants as tenant_store

__all__ = ["LedgerFailure", "credential_window", "ledger_failures", "open_ledger_incidents"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LedgerFailure:
    """A tenant whose live ledger does not verify, and why (the check's message: indexes, sizes)."""

    tenant: str
    reason: str

    def finding(self) -> dict[str, str]:
        """What the incident keeps to know this failure again (the tenant and a digest of the reason),
        so the same failure seen by a later check — after its incident was notified, too — is that
        incident."""
        digest = hashlib.sha256(self.reason.encode()).hexdigest()[:16]
        return {"rule": Signal.LEDGER_VERIFICATION_FAILED.value, "tenant": self.tenant, "failure": digest}


def _failure(ledger: Ledger, signer: CheckpointSigner) -> str | None:
    try:
        ledger.check_consistency(signer.journal)
        signed = [cp for cp in (*ledger.checkpoints()[-1:], signer.journal.latest(ledger.origin)) if cp]
        if not signed:
            return None  # nothing signed yet: nothing to verify against
        checkpoint = max(signed, key=lambda cp: cp.size)
        report = ledger.export_report(checkpoint, journal=signer.journal)
    except IntegrityError as exc:
        return str(exc)
    result = verify(report, checkpoint, signer.public_key)
    return None if result.ok else result.reason


def ledger_failures(engine: Engine, signer: CheckpointSigner) -> list[LedgerFailure]:
    """The tenants whose stored ledger fails verification (see the module docstring)."""
    with engine.connect() as conn:
        tenants = [t.id for t in tenant_store.list_tenants(conn)]
    out = []
    for tenant in tenants:
        reason = _failure(Ledger(engine, tenant), signer)
        if reason is not None:
            out.append(LedgerFailure(tenant, reason))
    return out


def open_ledger_incidents(
    engine: Engine, registry: Registry, failures: Sequence[LedgerFailure], *, now: datetime
) -> list[tuple[LedgerFailure, Incident, bool]]:
    """One incident per failure (window: the whole ledger up to ``now``); ``True`` with an incident
    opened now, ``False`` with the open (not yet notified) one that already covers the tenant."""
    out = []
    for failure in failures:
        finding = failure.finding()
        earlier = [
            i for i in list_incidents(engine, tenant=failure.tenant)
            if i.row.signal == Signal.LEDGER_VERIFICATION_FAILED.value
            and ((i.row.scope or {}).get("finding") == finding
                 or any(t.tenant == failure.tenant and t.notified is None for t in i.tenants))
        ]  # fmt: skip
        if earlier:
            out.append((failure, earlier[-1], False))
            continue
        summary = f"ledger verification failed: {failure.reason}"[:255]
        opened = open_incident(
            engine, registry, Scope(_EPOCH, now, tenants=(failure.tenant,)), nature=Nature.ALTERATION,
            signal=Signal.LEDGER_VERIFICATION_FAILED, summary=summary,
            measures="ledger writes under investigation; the signed checkpoints and journal are preserved",
            now=now, always=(failure.tenant,), finding=finding,
        )  # fmt: skip
        out.append((failure, opened, True))
    return out


def credential_window(engine: Engine, connection_ids: Sequence[str]) -> datetime:
    """When the oldest of the connections was created; :class:`ConfigError` naming an unknown one."""
    if not connection_ids:
        raise ConfigError("--signal leaked-credential needs --connection (the connection whose token leaked)")
    created = []
    with engine.connect() as conn:
        for c in connection_ids:
            row = connection_store.get_connection(conn, c)
            if row is None:
                raise ConfigError(f"--connection {c!r}: no such connection; see: crmhub connections list")
            created.append(row.created_at)
    return min(created)
