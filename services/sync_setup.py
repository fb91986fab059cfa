"""Creating a sync: the one check ``crmhub sync create`` and the web app's ``POST /syncs`` share.

A new sync is stored only if its tenant exists, the instruction version it cites is one the tenant
stored, and both its connections exist *and belong to that tenant* — a sync can never read from or
write to another controller's CRM. A refusal is a :class:`NewSyncRefused` naming the field of the
definition at fault and the fix; ``unknown`` marks a refusal about something the tenant does not
have (the web app answers those like any unknown id: 404). Check and insert run in one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from schemas.errors import ConfigError
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.syncs import SyncRow, SyncSpec

__all__ = ["NewSyncRefused", "check_new_sync", "create_sync"]


class NewSyncRefused(ConfigError):
    """The sync definition cannot be stored: ``field`` names the part at fault (``tenant``,
    ``instruction_version``, ``source_connection_id``, ``destination_connection_id``); ``unknown``:
    it names something the tenant does not have."""

    def __init__(self, message: str, *, field: str, unknown: bool = True) -> None:
        super().__init__(f"{field}: {message}", code=f"sync_refused.{field}")
        self.field = field
        self.unknown = unknown


def check_new_sync(conn: Connection, spec: SyncSpec) -> None:
    """Refuse ``spec`` (:class:`NewSyncRefused`) unless tenant, instruction version and both
    connections are the tenant's; reads only."""
    tenant = spec.tenant
    if tenant_store.get_tenant(conn, tenant) is None:
        raise NewSyncRefused(
            f"tenant {tenant!r} does not exist; create it with: crmhub tenant create {tenant}", field="tenant"
        )
    if instruction_store.get_instruction(conn, tenant, spec.instruction_version) is None:
        raise NewSyncRefused(
            f"tenant {tenant!r} has no instruction v{spec.instruction_version}; "
            "store it with: crmhub instruction load FILE",
            field="instruction_version",
        )
    for field, connection_id in (
        ("source_connection_id", spec.source_connection_id),
        ("destination_connection_id", spec.destination_connection_id),
    ):
        row = connection_store.get_connection(conn, connection_id)
        if row is None or row.tenant != tenant:  # another tenant's connection is not named as such
            raise NewSyncRefused(
                f"tenant {tenant!r} has no connection {connection_id!r}; use one of its own "
                f"(crmhub connections list --tenant {tenant}) or connect one (crmhub connect PROVIDER "
                f"--tenant {tenant})",
                field=field,
            )


def create_sync(engine: Engine, spec: SyncSpec, *, now: datetime | None = None) -> SyncRow:
    """Check ``spec`` (:func:`check_new_sync`) and store it, in one transaction; an existing sync id
    of the tenant is a :class:`ConfigError`."""
    with engine.begin() as conn:
        check_new_sync(conn, spec)
        return sync_store.create_sync(conn, spec, now=now or datetime.now(UTC))
