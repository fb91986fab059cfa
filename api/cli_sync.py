"""``crmhub tenant|instruction|sync|worker`` commands: set up a controller, its processing
instruction and its syncs, run them through Temporal and watch them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError

from api import syncops
from api.schedules import parse_interval
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings
from schemas.sync import Progress as SyncProgress
from schemas.sync import SyncMode, SyncStatus, SyncWriteMode
from services.syncconfig import MappingEdit, NotCovered, SyncHealth, parse_pairs, repoint, sync_health
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.engine import make_engine

__all__ = ["register"]

_T = TypeVar("_T")
out = Console()
err = Console(stderr=True)

tenant_app = typer.Typer(
    help="Controllers (tenants): home region and authorised subprocessors.", no_args_is_help=True
)
instruction_app = typer.Typer(
    help="Processing instructions (versioned, content-hashed).", no_args_is_help=True
)
sync_app = typer.Typer(
    help="Syncs: create, run, watch, pause, resume, cancel, schedule, set instruction and mapping.",
    no_args_is_help=True,
)

EXIT_FAILED = 1


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(instruction_app, name="instruction")
    app.add_typer(sync_app, name="sync")
    app.command("worker")(worker_cmd)


def _now() -> datetime:
    return datetime.now(UTC)


def _engine(settings: Settings) -> Any:
    return make_engine(settings.effective_database_url)


async def _with_client(settings: Settings, fn: Callable[[Client], Awaitable[_T]]) -> _T:
    from workers.client import connect

    connected = await connect(settings)
    try:
        return await fn(connected.client)
    finally:
        connected.engine.dispose()


# -- tenants and instructions ------------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="short id, e.g. acme")],
    name: Annotated[str, typer.Option(help="the controller's name")] = "",
    home_region: Annotated[str, typer.Option(help="registry region code: eea, us, uk, ch")] = "eea",
    subprocessors: Annotated[
        str, typer.Option(help="authorised subprocessors, comma-separated")
    ] = "salesforce,hubspot",
) -> None:
    """Register a controller."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", tenant_id):
        raise ConfigError(
            "tenant id must be 1-64 lowercase letters, digits, '-' or '_' (not starting with '_')"
        )
    settings = load_settings()
    settings.region_for(home_region)  # the deployment must have workers for that jurisdiction
    engine = _engine(settings)
    with engine.begin() as conn:
        row = tenant_store.create_tenant(
            conn,
            id=tenant_id,
            name=name or tenant_id,
            home_region=home_region,
            authorised_subprocessors=[s.strip() for s in subprocessors.split(",") if s.strip()],
            now=_now(),
        )
    out.print(
        f"tenant [bold]{row.id}[/] created: home region {row.home_region}, processed on "
        f"{settings.task_queue(settings.region_for(row.home_region))}"
    )


@instruction_app.command("load")
def instruction_load(
    path: Annotated[Path, typer.Argument(help="instruction YAML (see examples/instruction.yaml)")],
) -> None:
    """Validate and store a processing instruction version."""
    _store_instruction(path)


def _store_instruction(path: Path, *, tenant: str | None = None) -> int:
    """Validate and store the instruction of ``path`` (of ``tenant``, if given); returns its version."""
    from governance.policy import load_instruction

    ins = load_instruction(path)
    if tenant is not None and ins.tenant != tenant:
        raise ConfigError(
            f"{path} is an instruction of tenant {ins.tenant!r}, not of {tenant!r}; fix its tenant:"
        )
    settings = load_settings()
    engine = _engine(settings)
    with engine.begin() as conn:
        if tenant_store.get_tenant(conn, ins.tenant) is None:
            raise ConfigError(
                f"tenant {ins.tenant!r} does not exist; create it with: crmhub tenant create {ins.tenant}"
            )
        instruction_store.add_instruction(
            conn,
            tenant=ins.tenant,
            version=ins.version,
            content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash,
            now=_now(),
        )
    engine.dispose()
    out.print(
        f"instruction v{ins.version} of {ins.tenant} stored "
        f"(purpose {ins.purpose}, hash {ins.content_hash[:16]}…)"
    )
    return ins.version


# -- syncs ---------------------------------------------------------------------------------------------


@sync_app.command("create")
def sync_create(
    path: Annotated[Path, typer.Argument(help="sync definition YAML (see examples/sync.yaml)")],
    same_connection: Annotated[
        bool,
        typer.Option(
            "--same-connection",
            help="the destination is the source connection on purpose (otherwise refused)",
        ),
    ] = False,
    write_mode: Annotated[
        SyncWriteMode | None,
        typer.Option(
            "--write-mode",
            help="upsert (default), update-only, create-only, mirror (also delete what vanished at the "
            "source) or archive (HubSpot destinations); overrides the YAML's write_mode",
        ),
    ] = None,
) -> None:
    """Create a sync from a YAML definition (source, destination, mapping, instruction version).

    Checked like the web app's form (:mod:`services.sync_setup`): the tenant, its instruction
    version and both connections must be the tenant's, the destination another connection, both
    objects live streams of their connections, every mapped field a live field the instruction
    allows, and every field the destination requires mapped; endpoints left out are the regions
    the vendors reported at connect."""
    try:
        spec = sync_store.SyncSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read {path}: {type(exc).__name__}; check the path and YAML syntax"
        ) from None
    if write_mode is not None:
        spec = spec.model_copy(update={"write_mode": write_mode})
    from services.wiring import sync_setup

    settings = load_settings()
    engine = _engine(settings)
    try:
        with sync_setup(settings, engine) as setup:
            setup.create(spec, same_connection=same_connection, now=_now())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", code=exc.code) from None
    finally:
        engine.dispose()
    out.print(
        f"sync [bold]{spec.id}[/] of {spec.tenant} created: {spec.source_stream} → {spec.destination_stream} "
        f"(write mode {spec.write_mode.value})"
    )


@sync_app.command("write-mode")
def sync_write_mode(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    mode: Annotated[
        SyncWriteMode, typer.Argument(help="upsert, update-only, create-only, mirror or archive")
    ],
) -> None:
    """Change what the sync's next runs may write at the destination (create, update, delete);
    each run's ``push`` lineage event names the mode it wrote under."""
    settings = load_settings()
    engine = _engine(settings)
    try:
        with engine.begin() as conn:
            sync_store.set_sync_write_mode(conn, tenant, sync, mode, now=_now())
    finally:
        engine.dispose()
    out.print(f"sync [bold]{sync}[/] of {tenant}: write mode {mode.value} from its next run")


@sync_app.command("run")
def sync_run(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    mode: Annotated[
        SyncMode | None, typer.Option(help="full or incremental (default: incremental once it has a cursor)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow progress until the run ends")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Start a run (or join the one in progress) and follow it with a progress bar."""
    settings = load_settings()

    async def go(client: Client) -> SyncProgress | None:
        h = await syncops.start(
            client, tenant, sync, mode=mode, task_queue=settings.temporal.control_task_queue
        )
        if not wait:
            return await syncops.progress(client, tenant, sync)
        return await follow(client, tenant, sync, h, quiet=as_json)

    result = asyncio.run(_with_client(settings, go))
    _print_progress(result, as_json)
    if result is not None and not as_json:
        _print_health(_health(settings, tenant, sync), tenant)
    if result is not None and result.status not in (
        SyncStatus.COMPLETED,
        SyncStatus.RUNNING,
        SyncStatus.WAITING,
    ):
        raise typer.Exit(EXIT_FAILED)


async def follow(
    client: Client, tenant: str, sync_id: str, h: Any, *, quiet: bool = False, console: Console | None = None
) -> SyncProgress | None:
    """Poll the run's progress query until it ends, drawing a progress bar of records moved."""
    console = console or out
    task_result = asyncio.ensure_future(h.result())
    with Progress(
        TextColumn("[bold]{task.fields[phase]}"),
        BarColumn(),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("sync", total=None, phase="planning", line="")
        while True:
            finished = task_result.done()
            p = await syncops.progress(client, tenant, sync_id)
            if p is not None:
                c = p.counts
                line = (
                    f"pulled {c.pulled:,} · pushed {c.pushed:,} · failed {c.failed:,} · deleted {c.deleted:,}"
                    + (f" · waiting: {p.waiting_reason}" if p.waiting_reason else "")
                )
                bar.update(
                    task,
                    completed=c.pushed + c.failed,
                    total=max(c.pulled, 1),
                    phase=p.phase.value,
                    line=line,
                )
            if finished:
                break
            await asyncio.wait({task_result}, timeout=0.5)
    with contextlib.suppress(WorkflowFailureError):  # the progress query below says why
        await task_result
    return await syncops.progress(client, tenant, sync_id)


def _print_progress(p: SyncProgress | None, as_json: bool) -> None:
    if p is None:
        out.print("no run yet")
        return
    if as_json:
        out.print_json(p.model_dump_json())
        return
    c = p.counts
    table = Table(title=f"sync {p.sync_id} of {p.tenant} · run {p.run_id}")
    table.add_column("status")
    table.add_column("pulled", justify="right")
    table.add_column("pushed", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("quarantined", justify="right")
    table.add_column("deleted", justify="right")
    table.add_column("withheld values", justify="right")
    table.add_column("cursor")
    table.add_row(
        p.status.value,
        f"{c.pulled:,}",
        f"{c.pushed:,}",
        f"{c.failed:,}",
        f"{c.skipped:,}",
        f"{c.quarantined:,}",
        f"{c.deleted:,}",
        f"{c.withheld_fields:,}",
        p.cursor or "-",
    )
    out.print(table)
    if p.waiting_reason:
        out.print(f"[yellow]waiting:[/] {p.waiting_reason}", soft_wrap=True)
    if p.message:
        label = "[red]refused:[/] " if p.status is SyncStatus.REFUSED else ""
        out.print(f"{label}{p.message}", soft_wrap=True)


@sync_app.command("status")
def sync_status(
    tenant: Annotated[str, typer.Option()],
    sync: Annotated[str, typer.Option()],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Progress of the sync's latest run (from the workflow's progress query); in table mode also
    its quarantined records, source drift, a refusal and what to do about it (from the store)."""
    settings = load_settings()
    health = None if as_json else _health(settings, tenant, sync)
    _print_progress(asyncio.run(_with_client(settings, lambda c: syncops.progress(c, tenant, sync))), as_json)
    if health is not None:
        _print_health(health, tenant)


def _health(settings: Settings, tenant: str, sync: str) -> SyncHealth:
    engine = _engine(settings)
    try:
        return sync_health(engine, tenant, sync)
    finally:
        engine.dispose()


def _print_health(h: SyncHealth, tenant: str) -> None:
    """What needs the user: quarantine, drift, a refusal, and the commands that resume the sync."""
    if h.quarantined_last_run or h.quarantined_held:
        latest = f"{h.quarantined_last_run:,} held back by the latest run, " if h.quarantined_last_run else ""
        out.print(
            f"[yellow]quarantined:[/] {latest}{h.quarantined_held:,} record(s) held for the sync "
            "(a value no longer fit its field's type) — sealed, never pushed; corrected at the source "
            "they flow with the next incremental run, or re-read them all with: crmhub sync run --mode full",
            soft_wrap=True,
        )
    if h.drift:
        out.print(
            f"[yellow]source drift seen by the last run that read the source:[/] {' · '.join(h.drift)}",
            soft_wrap=True,
        )
    if h.refusal is not None:
        named = f": {', '.join(h.refusal.fields)}" if h.refusal.fields else ""
        out.print(f"[red]latest run refused[/] (rule {h.refusal.rule}{named})", soft_wrap=True)
        if h.repointed_since_refusal:
            out.print(
                f"the sync cites instruction v{h.instruction_version} since: its next run plans again "
                f"(crmhub sync run --tenant {tenant} --sync {h.sync_id})",
                soft_wrap=True,
            )
    elif h.will_refuse:
        out.print(
            f"[red]the next run will be refused:[/] {', '.join(h.will_refuse)} changed type at the source "
            f"while the sync cites instruction v{h.instruction_version}",
            soft_wrap=True,
        )
    if h.reconcile:
        out.print(
            f"[yellow]deletes to reconcile[/] ({h.reconcile}: the source could not prove every delete was "
            f"seen; pending until a reconciliation completes): crmhub sync reconcile --tenant {tenant} "
            f"--sync {h.sync_id} [--dry-run]",
            soft_wrap=True,
        )
    if h.needs_instruction:
        base = f"crmhub sync set-instruction --tenant {tenant} --sync {h.sync_id}"
        newer = h.latest_instruction if (h.latest_instruction or 0) > h.instruction_version else None
        out.print("to resume, the controller re-issues the instruction and the sync is pointed at it:")
        if newer is not None:
            out.print(f"  {base} --version {newer}", soft_wrap=True)
        out.print(
            f"  {base} --file NEW-INSTRUCTION.yaml   (stores it, then points the sync at it)", soft_wrap=True
        )
        out.print(
            "  a mapped field renamed or gone at the source: add --rename OLD=NEW or --drop FIELD",
            soft_wrap=True,
        )


def _edit(rename: list[str], drop: list[str], put: list[str]) -> MappingEdit:
    return MappingEdit(
        rename=parse_pairs(rename, "--rename"),
        drop=tuple(d.strip() for d in drop),
        put=parse_pairs(put, "--map"),
    )


def _repoint(tenant: str, sync: str, *, version: int | None, edit: MappingEdit) -> None:
    settings = load_settings()
    engine = _engine(settings)
    try:
        with engine.begin() as conn:
            done = repoint(conn, tenant, sync, now=_now(), version=version, edit=edit)
    except NotCovered as exc:
        base = f"crmhub sync set-instruction --tenant {tenant} --sync {sync}"
        hint = f"{base} --file NEW-INSTRUCTION.yaml"
        if exc.field is not None:
            hint += f" (allowing {exc.field})"
            if exc.field not in edit.put and exc.field not in edit.rename.values():  # not just added
                hint += f", or: crmhub sync set-mapping --tenant {tenant} --sync {sync} --drop {exc.field}"
        raise ConfigError(f"{exc.message}\n  e.g. {hint}") from None
    finally:
        engine.dispose()
    if done.version != done.old_version:
        out.print(
            f"sync [bold]{sync}[/] of {tenant} now cites instruction v{done.version} "
            f"(was v{done.old_version}); its next run accepts the source's current field types"
        )
    if done.mapping != done.old_mapping:
        gone = sorted(set(done.old_mapping) - set(done.mapping))
        new = {k: v for k, v in done.mapping.items() if done.old_mapping.get(k) != v}
        out.print(
            f"sync [bold]{sync}[/] mapping: "
            + " · ".join([*(f"{k} → {v}" for k, v in sorted(new.items())), *(f"{k} dropped" for k in gone)]),
            soft_wrap=True,
        )
    if done.version == done.old_version and done.mapping == done.old_mapping:
        out.print(f"sync {sync} of {tenant} already cites instruction v{done.version} with that mapping")


_RENAME = typer.Option(
    "--rename", help="OLD=NEW: a source field renamed at the source (its destination stays)"
)
_DROP = typer.Option("--drop", help="FIELD: stop reading this source field")
_MAP = typer.Option("--map", help="SRC=DST: read source field SRC into destination field DST")


@sync_app.command("set-instruction")
def sync_set_instruction(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    version: Annotated[int | None, typer.Option(help="a stored version of the tenant's instruction")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="store this instruction YAML first, then point at it")
    ] = None,
    rename: Annotated[list[str] | None, _RENAME] = None,
    drop: Annotated[list[str] | None, _DROP] = None,
    put: Annotated[list[str] | None, _MAP] = None,
) -> None:
    """Point a sync at an instruction version (the controller re-issued it, e.g. after schema drift),
    checked to exist, be the tenant's and allow every field the sync reads; optionally edit the
    mapping in the same step."""
    if (version is None) == (file is None):
        raise ConfigError("give exactly one of --version N (a stored version) or --file INSTRUCTION.yaml")
    edit = _edit(rename or [], drop or [], put or [])
    if file is not None:
        version = _store_instruction(file, tenant=tenant)
    _repoint(tenant, sync, version=version, edit=edit)


@sync_app.command("set-mapping")
def sync_set_mapping(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    rename: Annotated[list[str] | None, _RENAME] = None,
    drop: Annotated[list[str] | None, _DROP] = None,
    put: Annotated[list[str] | None, _MAP] = None,
) -> None:
    """Edit a sync's field mapping (checked against the instruction it cites)."""
    edit = _edit(rename or [], drop or [], put or [])
    if not edit:
        raise ConfigError("nothing to change: give --rename OLD=NEW, --drop FIELD or --map SRC=DST")
    _repoint(tenant, sync, version=None, edit=edit)


def _signal(fn: Callable[[Client, str, str], Awaitable[None]], tenant: str, sync: str, what: str) -> None:
    settings = load_settings()
    asyncio.run(_with_client(settings, lambda c: fn(c, tenant, sync)))
    out.print(f"{what} requested for sync {sync} of {tenant}")


@sync_app.command("pause")
def sync_pause(tenant: Annotated[str, typer.Option()], sync: Annotated[str, typer.Option()]) -> None:
    """Pause after the activities in flight."""
    _signal(syncops.pause, tenant, sync, "pause")


@sync_app.command("resume")
def sync_resume(tenant: Annotated[str, typer.Option()], sync: Annotated[str, typer.Option()]) -> None:
    _signal(syncops.resume, tenant, sync, "resume")


@sync_app.command("cancel")
def sync_cancel(tenant: Annotated[str, typer.Option()], sync: Annotated[str, typer.Option()]) -> None:
    """Cancel the run: staged batches are discarded, the run is recorded as cancelled."""
    _signal(syncops.cancel, tenant, sync, "cancellation")


@sync_app.command("schedule")
def sync_schedule(
    tenant: Annotated[str, typer.Option()],
    sync: Annotated[str, typer.Option()],
    every: Annotated[str | None, typer.Option(help="create/update: run every 15m, 1h, 1d …")] = None,
    pause_: Annotated[bool, typer.Option("--pause", help="pause the schedule")] = False,
    unpause: Annotated[bool, typer.Option("--unpause", help="unpause the schedule")] = False,
    trigger: Annotated[bool, typer.Option("--trigger", help="start a run now")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="delete the schedule")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Manage the sync's Temporal Schedule (incremental runs; overlapping triggers skipped)."""
    settings = load_settings()
    if delete:
        asyncio.run(_with_client(settings, lambda c: syncops.delete_schedule(c, tenant, sync)))
        out.print("schedule deleted")
        return
    paused = True if pause_ else False if unpause else None
    info = asyncio.run(
        _with_client(
            settings,
            lambda c: syncops.schedule(
                c,
                tenant,
                sync,
                every=parse_interval(every) if every else None,
                paused=paused,
                trigger_now=trigger,
                task_queue=settings.temporal.control_task_queue,
            ),
        )
    )
    data = {
        "id": info.id,
        "every_s": info.every.total_seconds(),
        "paused": info.paused,
        "next_runs": info.next_runs,
    }
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(
            f"schedule {info.id}: every {info.every}, {'paused' if info.paused else 'active'}; "
            f"next: {', '.join(info.next_runs) or '-'}"
        )


# -- worker --------------------------------------------------------------------------------------------


def worker_cmd(
    region: Annotated[str, typer.Option(help="the region whose task queue this worker serves")],
) -> None:
    """Run a worker for one region (plus the shared control queue) until Ctrl-C."""
    import logging

    from workers.worker import run_worker

    settings = load_settings()
    settings.task_queue(region)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out.print(
        f"worker for region [bold]{region}[/]: queues {settings.temporal.control_task_queue} "
        f"and {settings.task_queue(region)}"
    )
    from api.maintenance import start_notice_dispatch

    out.print(asyncio.run(start_notice_dispatch(settings)), soft_wrap=True)
    asyncio.run(run_worker(settings, region))
