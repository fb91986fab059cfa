"""``crmhub dsr export|erase|restrict|object|rectify``, ``crmhub keys list|rotate|rewrap|shred`` and
``crmhub tenant offboard`` (``--allow-unrevoked``: go on past a grant the vendor could not revoke).

Data-subject requests run as ``DataSubjectRequestWorkflow`` (started on the control queue; the work
runs on the tenant's region queue): the subject crosses Temporal sealed by the vault, the export
comes back sealed through the database. Exit codes: 0 done · 1 failed (or a destination refused a
delete) · 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine

from api.cli_common import migrated_engine, require_tenant
from api.cli_sync import tenant_app
from schemas.dsr import DsrInput, DsrKind, DsrResult, dsr_workflow_id
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

__all__ = ["register"]

EXIT_FAILED = 1
out = Console()
err = Console(stderr=True)

dsr_app = typer.Typer(help="Data-subject requests: export or erase one person's data.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Tenant data keys: list, rotate, rewrap under a new KEK, shred.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(dsr_app, name="dsr")
    app.add_typer(keys_app, name="keys")
    tenant_app.command("offboard")(tenant_offboard)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- data-subject requests -------------------------------------------------------------------------


async def run_dsr(
    settings: Settings,
    tenant: str,
    kind: DsrKind,
    *,
    email: str | None,
    ids: list[str],
    propagate: bool = False,
    scan_sources: bool = True,
    corrections: dict[str, Any] | None = None,
) -> tuple[DsrResult, dict[str, Any] | None]:
    """Start the request's workflow, wait for it; for an export, fetch and open the sealed export."""
    from services.access_ledger import record_cli_access
    from store import auditors as auditor_store
    from workers.client import connect
    from workflows.dsr_activities import open_export, seal_subject

    connected = await connect(settings)
    try:
        require_tenant(connected.engine, tenant)
        request_id = uuid.uuid4().hex[:16]
        inp = DsrInput(
            request_id=request_id,
            tenant=tenant,
            kind=kind,
            sealed_subject=seal_subject(connected.vault, tenant, request_id, email, ids, corrections),
            propagate=propagate,
            scan_sources=scan_sources,
        )
        handle = await connected.client.start_workflow(
            "DataSubjectRequestWorkflow",
            inp,
            id=dsr_workflow_id(tenant, request_id),
            task_queue=settings.temporal.control_task_queue,
            result_type=DsrResult,
        )
        result: DsrResult = await handle.result()
        record_cli_access(
            settings, connected.engine, connected.vault, tenant, f"dsr_{kind.value}",
            target=f"request {request_id}",
            counts={"held": result.held, "destinations": len(result.destinations)},
        )  # fmt: skip
        export = None
        if result.export_ready:
            with connected.engine.begin() as conn:
                sealed = auditor_store.pop_dsr_export(conn, tenant, request_id)
            if sealed is None:
                raise ConfigError(f"the export of request {request_id} is gone (fetched or expired)")
            export = open_export(connected.vault, tenant, request_id, sealed)
        return result, export
    finally:
        connected.engine.dispose()


def _dsr(
    tenant: str,
    kind: DsrKind,
    email: str | None,
    ids: list[str],
    propagate: bool,
    scan: bool,
    corrections: dict[str, Any] | None = None,
) -> Any:
    from temporalio.client import WorkflowFailureError

    settings = load_settings()
    try:
        with out.status(
            f"{kind.value} request for one data subject of {tenant} (DataSubjectRequestWorkflow)"
        ):
            return asyncio.run(
                run_dsr(
                    settings,
                    tenant,
                    kind,
                    email=email,
                    ids=ids,
                    propagate=propagate,
                    scan_sources=scan,
                    corrections=corrections,
                )
            )
    except WorkflowFailureError as exc:
        cause: BaseException | None = exc.cause
        while getattr(cause, "cause", None) is not None:
            cause = getattr(cause, "cause", None)
        err.print(f"[red]request failed:[/] {cause}", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None


def _summary(result: DsrResult) -> None:
    out.print(
        f"held by crmhub: {result.staging_records} staged records, {result.dead_letters} dead letters, "
        f"{result.id_map_rows} id-map rows; source records: {result.source_records}; "
        f"lineage events naming the subject: {result.lineage_events}"
    )
    for d in result.destinations:
        extra = f", deleted {d.deleted}, failed {d.failed}" if result.propagated else ""
        if result.kind is DsrKind.RECTIFY:
            extra = f", rectified {d.rectified}, failed {d.failed}"
        codes = f" ({', '.join(d.error_codes)})" if d.error_codes else ""
        out.print(
            f"  destination {d.connector}/{d.stream} (sync {d.sync_id}): {d.records} records{extra}{codes}"
        )
    for note in result.notes:
        out.print(f"  [yellow]note:[/] {note}", soft_wrap=True)
    if result.kind is DsrKind.ERASE:
        out.print(
            f"relationship state erased: {result.association_links} association-link rows, "
            f"{result.association_deferrals} deferral-queue rows"
        )
    if result.suppressed:
        out.print(f"suppressed: {result.suppressed} source records are never pulled again")
    if result.ledger_index is not None:
        out.print(f"recorded as lineage event {result.ledger_index} ({result.kind.value})")


Email = Annotated[str | None, typer.Option("--subject", "--email", help="the subject's e-mail address")]
Ids = Annotated[list[str] | None, typer.Option("--id", help="a source record id of the subject (repeatable)")]
Tenant = Annotated[str, typer.Option("--tenant", help="tenant id")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable")]
NoScan = Annotated[
    bool, typer.Option("--no-source-scan", help="do not look the subject up in the syncs' source CRMs")
]


@dsr_app.command("export")
def dsr_export(
    tenant: Tenant,
    subject: Email = None,
    ids: Ids = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="export file (mode 0600)")] = None,
    no_source_scan: NoScan = False,
    as_json: AsJson = False,
) -> None:
    """Everything crmhub holds about one person (staging, dead letters, id map), where their records
    went (lineage trace, destinations) — as JSON."""
    result, export = _dsr(tenant, DsrKind.EXPORT, subject, ids or [], False, not no_source_scan)
    path = output or Path(f"dsr-{tenant}-{result.request_id}.json")
    _write_private(path, json.dumps(export, ensure_ascii=False, indent=1).encode())
    if as_json:
        out.print_json(json.dumps({**result.model_dump(mode="json"), "file": str(path)}))
        return
    _summary(result)
    out.print(f"export written to {path} (mode 0600: it holds personal data)")


@dsr_app.command("erase")
def dsr_erase(
    tenant: Tenant,
    subject: Email = None,
    ids: Ids = None,
    propagate: Annotated[
        bool, typer.Option("--propagate", help="delete the subject's records at the destinations too")
    ] = False,
    no_source_scan: NoScan = False,
    as_json: AsJson = False,
) -> None:
    """Remove one person from crmhub's stores, record an ``erase`` lineage event and name the
    destinations that received their data (``--propagate`` deletes there too)."""
    result, _ = _dsr(tenant, DsrKind.ERASE, subject, ids or [], propagate, not no_source_scan)
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        _summary(result)
        if result.destinations and not propagate:
            out.print(
                "the destinations above still hold the subject's data: "
                "rerun with --propagate to delete it there"
            )
    if any(d.failed for d in result.destinations):
        raise typer.Exit(EXIT_FAILED)


Propagate = Annotated[
    bool, typer.Option("--propagate", help="delete the subject's records at the destinations too")
]


def _restrict(
    tenant: str, kind: DsrKind, subject: str | None, ids: list[str], propagate: bool, as_json: bool
) -> None:
    result, _ = _dsr(tenant, kind, subject, ids, propagate, True)
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        _summary(result)
        if result.destinations and not propagate:
            out.print("the destinations above still hold the subject's data: rerun with --propagate")
    if any(d.failed for d in result.destinations):
        raise typer.Exit(EXIT_FAILED)


@dsr_app.command("restrict")
def dsr_restrict(
    tenant: Tenant,
    subject: Email = None,
    ids: Ids = None,
    propagate: Propagate = False,
    as_json: AsJson = False,
) -> None:
    """Restrict processing (Art. 18): the subject's source records are suppressed (keyed hashes on
    the suppression list, checked on every page a sync reads) and dropped from staging;
    ``--propagate`` deletes them at the destinations."""
    _restrict(tenant, DsrKind.RESTRICT, subject, ids or [], propagate, as_json)


@dsr_app.command("object")
def dsr_object(
    tenant: Tenant,
    subject: Email = None,
    ids: Ids = None,
    propagate: Propagate = False,
    as_json: AsJson = False,
) -> None:
    """Record an objection (Art. 21): enforced like a restriction."""
    _restrict(tenant, DsrKind.OBJECT, subject, ids or [], propagate, as_json)


def _corrections(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--set takes FIELD=VALUE (a source field name), got {pair!r}")
        out[name.strip()] = value
    return out


@dsr_app.command("rectify")
def dsr_rectify(
    tenant: Tenant,
    subject: Email = None,
    ids: Ids = None,
    values: Annotated[
        list[str] | None,
        typer.Option("--set", help="FIELD=VALUE, a source field's corrected value (repeatable)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Rectification (Art. 16): push the subject's corrected values to every destination holding
    their records, through the sync's instruction and mapping."""
    corrections = _corrections(values or [])
    if not corrections:
        raise typer.BadParameter("pass at least one --set FIELD=VALUE")
    result, _ = _dsr(tenant, DsrKind.RECTIFY, subject, ids or [], False, True, corrections)
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        _summary(result)
    if any(d.failed for d in result.destinations):
        raise typer.Exit(EXIT_FAILED)


# -- keys ------------------------------------------------------------------------------------------


def _vault(settings: Settings) -> tuple[Engine, Any, Any]:
    from governance.vault import Vault
    from services.wiring import key_provider

    engine = migrated_engine(settings)
    provider = key_provider(settings)
    return engine, Vault(engine, provider), provider


@contextmanager
def _tenant_vault(settings: Settings, tenant: str) -> Iterator[tuple[Engine, Any]]:
    """The engine and vault of a command on one existing tenant; the engine is disposed after."""
    engine, vault, _ = _vault(settings)
    try:
        require_tenant(engine, tenant)
        yield engine, vault
    finally:
        engine.dispose()


def _confirm(consequence: str) -> Any:
    """The ``--yes`` option of an irreversible command; ``consequence`` is what it confirms."""
    return typer.Option("--yes", help=f"confirm: {consequence}")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="one tenant only")] = None,
    as_json: AsJson = False,
) -> None:
    """Key metadata: tenant, kind, version, status, KEK id, uses reserved (never key material)."""
    engine, vault, _ = _vault(load_settings())
    try:
        keys = vault.list_keys(tenant)
    finally:
        engine.dispose()
    if as_json:
        out.print_json(json.dumps([k.model_dump(mode="json") for k in keys]))
        return
    for k in keys:
        out.print(
            f"{k.tenant:<20} {k.kind:<10} v{k.version:<4} {k.status:<10} "
            f"kek {k.kek_id} uses {k.uses_reserved:,}"
        )


@keys_app.command("rotate")
def keys_rotate(tenant: Tenant, as_json: AsJson = False) -> None:
    """Start a new data-key version for the tenant (new seals use it; old data still opens)."""
    from services.access_ledger import record_cli_access

    settings = load_settings()
    with _tenant_vault(settings, tenant) as (engine, vault):
        version = vault.rotate(tenant)
        record_cli_access(settings, engine, vault, tenant, "key_rotate", target=f"data key v{version}")
    if as_json:
        out.print_json(json.dumps({"tenant": tenant, "version": version}))
    else:
        out.print(f"data key of {tenant} rotated: new writes use v{version}")


@keys_app.command("rewrap")
def keys_rewrap(as_json: AsJson = False) -> None:
    """Create a new key-encryption key (local keyring) and rewrap every live tenant key under it
    (a ``key_rewrap`` access event in each tenant's ledger)."""
    from services.access_ledger import record_cli_access
    from workers.converter import CODEC_TENANT

    settings = load_settings()
    engine, vault, provider = _vault(settings)
    try:
        provider.rotate_kek()
        report = vault.rewrap(provider)
        target = f"KEK {', '.join(report.from_kek_ids) or '-'} → {report.to_kek_id}"
        for tenant, keys in sorted(report.per_tenant.items()):
            if tenant != CODEC_TENANT:  # the Temporal payload key is no controller's
                record_cli_access(
                    settings, engine, vault, tenant, "key_rewrap", target=target, counts={"keys": keys}
                )
    finally:
        engine.dispose()
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        out.print(
            f"{report.keys_rewrapped} keys rewrapped from {', '.join(report.from_kek_ids) or '-'} "
            f"to {report.to_kek_id}; the old KEK is no longer needed once every worker has the new keyring"
        )


def _signer(settings: Settings) -> Any:
    from governance.lineage import CheckpointSigner

    return CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)


@keys_app.command("shred")
def keys_shred(
    tenant: Tenant,
    yes: Annotated[bool, _confirm("everything sealed for the tenant becomes unreadable")] = False,
    as_json: AsJson = False,
) -> None:
    """Crypto-shred the tenant: destroy its data and pseudonym keys, record an ``erase`` lineage
    event, print the deletion certificate. Irreversible."""
    from governance.lineage import Ledger
    from schemas.lineage import EventKind, LineageEvent

    if not yes:
        raise ConfigError("keys shred destroys the tenant's keys for good; confirm with --yes")
    settings = load_settings()
    from services.access_ledger import record_cli_access

    with _tenant_vault(settings, tenant) as (engine, vault):
        record_cli_access(settings, engine, vault, tenant, "key_shred")  # before: the actor is a keyed hash
        cert = vault.shred(tenant)
        ledger = Ledger(engine, tenant)
        ledger.append(
            [
                LineageEvent(
                    kind=EventKind.ERASE,
                    tenant=tenant,
                    run_id=f"shred:{tenant}:{cert.destroyed_at.isoformat()}",
                    counts={
                        "keys_destroyed": cert.keys_destroyed,
                        "sealed_upper_bound": cert.sealed_upper_bound,
                    },
                    details={"reason": "crypto-shredding", "key_certificate": cert.digest},
                )
            ]
        )
        ledger.checkpoint(_signer(settings))
    if as_json:
        out.print_json(cert.model_dump_json())
    else:
        out.print(
            f"[bold]{tenant}[/]: {cert.keys_destroyed} keys destroyed; certificate digest {cert.digest}"
        )
        out.print_json(cert.model_dump_json())


# -- offboarding -----------------------------------------------------------------------------------


def tenant_offboard(
    tenant: Tenant,
    out_dir: Annotated[
        Path, typer.Option("--out", help="directory for the export and the certificate")
    ] = Path("."),
    yes: Annotated[bool, _confirm("the tenant's data is deleted and its keys destroyed")] = False,
    allow_unrevoked: Annotated[
        bool,
        typer.Option(
            "--allow-unrevoked",
            help="go on even if a vendor could not revoke a grant; the certificate records it unrevoked",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Offboard a tenant: revoke every OAuth grant at the vendors → export everything crmhub holds →
    delete it (web users and sessions too) → crypto-shred its keys → deletion certificate with each
    connection's revoke outcome and per-store counts (both files in --out, mode 0600).

    If a grant cannot be revoked, nothing is deleted and the command exits 1 naming the connection;
    run it again once the vendor answers (it is idempotent), or pass --allow-unrevoked."""
    from api.offboard import offboard_tenant
    from services.access_ledger import record_cli_access
    from services.wiring import credentials

    if not yes:
        raise ConfigError("offboarding deletes the tenant's data and destroys its keys; confirm with --yes")
    settings = load_settings()
    with _tenant_vault(settings, tenant) as (engine, vault), credentials(
        settings, engine, vault
    ) as oauth, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=as_json,
    ) as bar:  # fmt: skip
        tasks: dict[str, Any] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        # recorded first: the export holds the ledger, and the keys (the actor's keyed hash) go
        record_cli_access(
            settings, engine, vault, tenant, "offboarding_export", target=f"export to {out_dir.name or '.'}"
        )
        cert = offboard_tenant(
            engine, vault, _signer(settings), tenant, out_dir,
            oauth=oauth, allow_unrevoked=allow_unrevoked, progress=step,
        )  # fmt: skip
    if as_json:
        out.print_json(json.dumps(cert))
        return
    stores = ", ".join(f"{k} {v:,}" for k, v in cert["stores"].items())
    out.print(f"[bold]{tenant} offboarded[/] at {cert['completed_at']}")
    for c in cert["connections"]:
        why = f" — {c['reason']}" if c["reason"] else ""
        out.print(f"  grant        {c['provider']} {c['connection']}: {c['outcome']}{why}", soft_wrap=True)
    out.print(f"  export       {out_dir / cert['export']['file']} (sha256 {cert['export']['sha256'][:16]}…)")
    out.print(f"  deleted      {stores}", soft_wrap=True)
    out.print(f"  keys         {cert['keys']['keys_destroyed']} destroyed (crypto-shredding)")
    out.print(f"  ledger       erase event {cert['ledger']['erase_event_index']}, signed checkpoint")
    out.print(f"  certificate  {out_dir / (tenant + '-deletion-certificate.json')} ({cert['digest']})")
