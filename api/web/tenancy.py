"""Tenant isolation in one place.

Every route that touches customer data takes a :class:`TenantScope` from the :func:`tenant_scope`
dependency. The scope is built from the logged-in session only (never from the URL or a form), and
its methods are the only way routes read or write tenant data: each query filters on
``scope.tenant``, and an id of another tenant is reported exactly like an unknown id (404).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select

from api.web.context import WebContext
from api.web.session import Session, require_session
from governance.lineage import Ledger
from schemas.lineage import LineageEvent
from services.access_ledger import record_access, settings_signer, web_actor
from services.sync_setup import NewSyncRefused
from store import connections as connection_store
from store import instructions as instruction_store
from store import runs as run_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store import users as user_store
from store.connections import ConnectionInfo, ConnectionStatus
from store.instructions import InstructionRow
from store.runs import RunRow
from store.syncs import SyncRow, SyncSpec
from store.tenants import TenantRow

__all__ = ["GUARD_ROLES", "AdminScope", "EditorScope", "Scope", "TenantScope", "tenant_scope"]


def _not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no such {what}")


@dataclass(frozen=True)
class TenantScope:
    """The current user's tenant and the data queries allowed for it."""

    ctx: WebContext
    session: Session
    tenant: str

    # ---- tenant and user -------------------------------------------------------------------------

    def tenant_row(self) -> TenantRow:
        with self.ctx.engine.connect() as conn:
            row = tenant_store.get_tenant(conn, self.tenant)
        if row is None:
            raise _not_found("tenant")
        return row

    def user_email(self) -> str:
        with self.ctx.engine.connect() as conn:
            user = user_store.get_user(conn, self.session.user_id)
        if user is None or user.tenant != self.tenant:
            raise _not_found("user")
        return self.ctx.vault.open(
            self.tenant, user.email_sealed, dataset="web-user-email", object_id=user.id, purpose="web-login"
        ).decode("utf-8")

    # ---- connections -----------------------------------------------------------------------------

    def connections(self) -> list[ConnectionInfo]:
        with self.ctx.engine.connect() as conn:
            rows = connection_store.list_connections(conn, tenant=self.tenant)
        return [r.info() for r in rows]

    def active_connections(self) -> list[ConnectionInfo]:
        """The connections a new sync or an instruction edit may use: the ``active`` ones."""
        return [c for c in self.connections() if c.status is ConnectionStatus.ACTIVE]

    def connection(self, connection_id: str) -> ConnectionInfo:
        with self.ctx.engine.connect() as conn:
            row = connection_store.get_connection(conn, connection_id)
        if row is None or row.tenant != self.tenant:
            raise _not_found("connection")
        return row.info()

    # ---- instructions ----------------------------------------------------------------------------

    def instructions(self) -> list[InstructionRow]:
        t = instruction_store.instructions
        with self.ctx.engine.connect() as conn:
            versions = conn.execute(
                select(t.c.version).where(t.c.tenant == self.tenant).order_by(t.c.version.desc())
            ).scalars()
            rows = [instruction_store.get_instruction(conn, self.tenant, v) for v in versions]
        return [r for r in rows if r is not None]

    def latest_instruction(self) -> InstructionRow | None:
        with self.ctx.engine.connect() as conn:
            return instruction_store.latest_instruction(conn, self.tenant)

    def add_instruction(
        self, *, version: int, content: dict[str, object], content_hash: str
    ) -> InstructionRow:
        if content.get("tenant") != self.tenant:
            raise _not_found("tenant")
        with self.ctx.engine.begin() as conn:
            return instruction_store.add_instruction(
                conn,
                tenant=self.tenant,
                version=version,
                content=content,
                content_hash=content_hash,
                now=datetime.now(UTC),
            )

    # ---- syncs and runs --------------------------------------------------------------------------

    def syncs(self) -> list[SyncRow]:
        t = sync_store.syncs
        with self.ctx.engine.connect() as conn:
            ids = conn.execute(select(t.c.id).where(t.c.tenant == self.tenant).order_by(t.c.id)).scalars()
            rows = [sync_store.get_sync(conn, self.tenant, i) for i in ids]
        return [r for r in rows if r is not None]

    def sync(self, sync_id: str) -> SyncRow:
        with self.ctx.engine.connect() as conn:
            row = sync_store.get_sync(conn, self.tenant, sync_id)
        if row is None:
            raise _not_found("sync")
        return row

    def create_sync(self, spec: SyncSpec, *, same_connection: bool = False) -> SyncRow:
        """Create the sync after the check ``crmhub sync create`` runs too
        (:meth:`services.sync_setup.SyncSetup.create`); something the tenant does not have
        (another tenant's connection included) is a 404, like any unknown id."""
        if spec.tenant != self.tenant:
            raise _not_found("tenant")
        try:
            return self.ctx.sync_setup.create(spec, same_connection=same_connection, now=datetime.now(UTC))
        except NewSyncRefused as exc:
            if exc.unknown and exc.field.endswith("connection_id"):
                raise _not_found("connection") from None
            raise

    def runs(self, sync_id: str, *, limit: int = 20) -> list[RunRow]:
        with self.ctx.engine.connect() as conn:
            return run_store.list_runs(conn, self.tenant, sync_id, limit=limit)

    def lineage_events(self) -> list[LineageEvent]:
        return Ledger(self.ctx.engine, self.tenant).read_events()

    def record_access(self, action: str, target: str | None = None) -> int:
        """Record this user's touch of personal data or its protection in the human access ledger
        (:mod:`services.access_ledger`; the actor is the user's opaque id)."""
        actor = web_actor(self.session.user_id)
        return record_access(
            self.ctx.engine, self.tenant, action, actor, at=datetime.now(UTC), target=target,
            signer=settings_signer(self.ctx.settings),
        )  # fmt: skip


def web_context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.web
    return ctx


def tenant_scope(request: Request, session: Annotated[Session, Depends(require_session)]) -> TenantScope:
    """The dependency every tenant-data route uses: the logged-in session's tenant, nothing else."""
    return TenantScope(web_context(request), session, session.tenant)


Scope = Annotated[TenantScope, Depends(tenant_scope)]
"""Any logged-in user of the tenant (a viewer too): reading pages, their own password."""


GUARD_ROLES: dict[Callable[..., TenantScope], tuple[str, ...]] = {}
"""Each role guard → the roles it admits: what :mod:`api.web.permissions` reads to show a page's
buttons only to the roles the route behind them admits (the one table, kept by the guards)."""


def _role_scope(*allowed: str) -> Callable[[TenantScope], TenantScope]:
    def scope_of_role(scope: Scope) -> TenantScope:
        role = scope.session.role
        if role not in allowed:
            raise HTTPException(
                status_code=403,
                detail=f"This needs the {' or '.join(allowed)} role; you are signed in as {role}. "
                "Ask an admin of your tenant to do it, or to change your role.",
            )
        return scope

    GUARD_ROLES[scope_of_role] = allowed
    return scope_of_role


AdminScope = Annotated[TenantScope, Depends(_role_scope("admin"))]
"""Only admins: processing instructions (and which one a sync runs under), connections, users (and
their sessions) and notification settings."""
EditorScope = Annotated[TenantScope, Depends(_role_scope("admin", "editor"))]
"""Admins and editors: create, run, pause, resume and schedule syncs."""
