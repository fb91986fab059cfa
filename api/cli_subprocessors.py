"""``crmhub subprocessors``: the versioned subprocessor registry (GDPR Art. 28(2)) — propose a change
with an objection window, record a tenant's objection, close the window, and list versions,
objections and each tenant's effective version (:mod:`services.subprocessor_changes`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli_common import migrated_engine
from schemas.lineage import format_timestamp
from schemas.settings import load_settings

if TYPE_CHECKING:
    from store.subprocessor_versions import ObjectionChoice

__all__ = ["register", "subprocessors_app"]

out = Console()

subprocessors_app = typer.Typer(
    help="The versioned subprocessor registry: propose a change, objections, apply (Art. 28(2)).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``crmhub subprocessors`` to ``app``."""
    app.add_typer(subprocessors_app, name="subprocessors")


@subprocessors_app.command("propose")
def propose_cmd(
    registry_file: Annotated[
        Path, typer.Argument(help="the new registry (YAML, the format of subprocessors.yaml)")
    ],
    summary: Annotated[str, typer.Option(help="what changes and why (sent to the tenants)")],
    window: Annotated[str, typer.Option(help="objection window: 30d, 12h, 15m, 30s")] = "30d",
) -> None:
    """Propose a new registry version: the tenants it concerns are notified and may object until the
    window closes."""
    from api.schedules import parse_interval
    from governance.registry import load_registry
    from services.subprocessor_changes import propose
    from services.wiring import subprocessor_registry

    settings = load_settings()
    new = load_registry(registry_file)
    engine = migrated_engine(settings)
    try:
        proposal = propose(
            engine,
            subprocessor_registry(settings),
            new,
            summary=summary,
            window=parse_interval(window),
            now=datetime.now(UTC),
        )
    finally:
        engine.dispose()
    v = proposal.version
    out.print(
        f"proposed subprocessor registry version {v.version} ({proposal.change.describe()}); "
        f"objections until {format_timestamp(v.window_closes)}; "
        f"notified: {', '.join(proposal.notified) or 'no tenant'}",
        soft_wrap=True,
    )


@subprocessors_app.command("object")
def object_cmd(
    version: Annotated[int, typer.Argument(help="the proposed version")],
    tenant: Annotated[str, typer.Option(help="the objecting tenant (controller)")],
    choice: Annotated[
        str, typer.Option(help="keep: its syncs keep running on the old set; stop: its syncs stop")
    ] = "keep",
) -> None:
    """Record a tenant's objection to a proposed version: it will not apply to the tenant's syncs."""
    from schemas.errors import ConfigError
    from services.subprocessor_changes import object_to
    from store.subprocessor_versions import ObjectionChoice

    if choice not in ("keep", "stop"):
        raise ConfigError("--choice must be keep (run on the old set) or stop (its syncs stop)")
    engine = migrated_engine(load_settings())
    try:
        row = object_to(engine, tenant, version, ObjectionChoice(choice), by="cli", now=datetime.now(UTC))
    finally:
        engine.dispose()
    out.print(f"tenant {row.tenant} objected to version {row.version}; its syncs will {_choice(row.choice)}")


@subprocessors_app.command("close")
def close_cmd(version: Annotated[int, typer.Argument(help="the proposed version")]) -> None:
    """Close a version's objection window: it applies to every tenant that did not object."""
    from services.subprocessor_changes import close
    from services.wiring import subprocessor_registry

    settings = load_settings()
    engine = migrated_engine(settings)
    try:
        closing = close(engine, subprocessor_registry(settings), version, now=datetime.now(UTC))
    finally:
        engine.dispose()
    out.print(f"version {closing.version} applied to: {', '.join(closing.applied_to) or 'no tenant'}")
    for o in closing.not_applied:
        out.print(f"not applied to {o.tenant} (objected to v{o.version}): its syncs {_choice(o.choice)}")


@subprocessors_app.command("list")
def list_cmd() -> None:
    """Every registry version (window, applied), the objections and each tenant's effective version."""
    from governance.registry_versions import effective_registry
    from services.wiring import subprocessor_registry
    from store import subprocessor_versions as version_store
    from store import tenants as tenant_store

    settings = load_settings()
    configured = subprocessor_registry(settings)
    engine = migrated_engine(settings)
    try:
        with engine.connect() as conn:
            rows = version_store.list_versions(conn)
            objections = version_store.list_objections(conn)
            effective = {
                t.id: effective_registry(conn, configured, t.id) for t in tenant_store.list_tenants(conn)
            }
    finally:
        engine.dispose()
    if not rows:
        out.print("the registry is not versioned yet: every tenant runs under the configured file")
        return
    table = Table(title="subprocessor registry versions")
    for col in ("version", "summary", "proposed", "window closes", "applied", "sha-256"):
        table.add_column(col)
    for r in rows:
        applied = format_timestamp(r.applied) if r.applied else "proposed"
        table.add_row(
            str(r.version), r.summary, format_timestamp(r.proposed), format_timestamp(r.window_closes),
            applied, r.content_hash[:16],
        )  # fmt: skip
    out.print(table)
    for o in objections:
        out.print(f"objection: {o.tenant} to v{o.version} ({o.choice.value}, by {o.by})")
    for tenant, e in effective.items():
        held = f", held back by its objection to v{e.held_by.version}" if e.held_by else ""
        stopped = " — syncs stopped" if e.stopped else ""
        out.print(f"tenant {tenant}: runs under v{e.version}{held}{stopped}")


def _choice(choice: ObjectionChoice) -> str:
    return "stop" if choice.value == "stop" else "keep running on the old set"
