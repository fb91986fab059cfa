"""``crmhub incident open|update|notify|list|show|report|check-ledger`` (and ``repair``,
``check-codec``: :mod:`api.cli_incident_checks`): personal-data breaches
(GDPR Art. 33(2), :mod:`services.incidents`). ``open`` computes the affected tenants, counts and
categories from lineage; ``notify`` enqueues one breach notice per affected controller and starts
its ``NoticeDeliveryWorkflow`` at once (a breach does not wait for a schedule); ``report`` is what a
controller needs for its own Art. 33(3) notification."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli_common import migrated_engine
from schemas.errors import ConfigError
from schemas.lineage import format_timestamp
from schemas.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from services.incidents import Incident

__all__ = ["incident_app", "register"]

out = Console()
incident_app = typer.Typer(
    help="Personal-data breaches (Art. 33(2)): open from lineage, notify controllers, report.",
    no_args_is_help=True,
)

Many = Annotated[list[str] | None, typer.Option()]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable")]


def register(app: typer.Typer) -> None:
    """Add ``crmhub incident`` to ``app`` (with ``repair`` and ``check-codec``)."""
    import api.cli_incident_checks  # noqa: F401  (attaches its commands to incident_app)

    app.add_typer(incident_app, name="incident")


def _repair(engine: Engine) -> None:
    """Finish the ledger events an earlier incident command owed (best effort, said when it fails)."""
    from api.cli_incident_checks import repair_owed

    repair_owed(engine)


def _when(value: str | None, name: str, default: datetime | None = None) -> datetime:
    """An ISO 8601 date/datetime (naive: UTC), or ``default`` when absent or ``now``."""
    from api.audit.reports import parse_when

    when = None if value == "now" else parse_when(value, f"--{name}")
    if when is not None:
        return when
    if default is None:
        raise ConfigError(f"--{name} is required (ISO 8601, e.g. 2026-12-07T09:00:00Z)")
    return default


@incident_app.command("open")
def open_cmd(
    summary: Annotated[str, typer.Option(help="what happened, ≤ 255 chars (no personal data)")],
    start: Annotated[
        str | None,
        typer.Option("--from", help="window start (ISO 8601); leaked-credential: connection created"),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="window end, exclusive (default now)")] = None,
    aware: Annotated[str | None, typer.Option(help="when crmhub became aware (default now)")] = None,
    nature: Annotated[
        str, typer.Option(help="unauthorized_access | disclosure | loss | alteration | destruction")
    ] = "unauthorized_access",
    signal: Annotated[str, typer.Option(help="manual | leaked-credential")] = "manual",
    tenant: Many = None,
    sync: Many = None,
    connection: Many = None,
    subprocessor: Annotated[str | None, typer.Option(help="a registry subprocessor id")] = None,
    consequences: Annotated[str, typer.Option(help="likely consequences (for the Art. 33(3) report)")] = "",
    measures: Annotated[str, typer.Option(help="measures taken or proposed")] = "",
    as_json: AsJson = False,
) -> None:
    """Open an incident: the affected tenants, subject and record counts and data categories are
    computed from lineage over the window and filters; each affected tenant's ledger records when
    crmhub became aware."""
    from services.incident_scope import Scope
    from services.incident_signals import credential_window
    from services.incidents import Signal, open_incident
    from services.wiring import subprocessor_registry

    settings = load_settings()
    now = datetime.now(UTC)
    how = (
        Signal(signal.replace("-", "_"))
        if signal.replace("-", "_") in {"manual", "leaked_credential"}
        else None
    )
    if how is None:
        raise ConfigError(
            "--signal must be manual or leaked-credential (ledger failures: crmhub incident check-ledger; "
            "codec-token misuse: crmhub incident check-codec)"
        )
    engine = migrated_engine(settings)
    try:
        _repair(engine)
        if how is Signal.LEAKED_CREDENTIAL:
            default_start = credential_window(engine, connection or [])
        else:
            default_start = None
        window = (_when(start, "from", default_start), _when(end, "to", now))
        scope = Scope(*window, tuple(tenant or ()), tuple(sync or ()), tuple(connection or ()), subprocessor)
        incident = open_incident(
            engine, subprocessor_registry(settings), scope, nature=nature, signal=how, summary=summary,
            consequences=consequences, measures=measures, became_aware=_when(aware, "aware", now), now=now,
        )  # fmt: skip
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(_show(incident, now)))
        return
    out.print(
        f"opened incident [bold]{incident.row.id}[/] ({incident.row.nature}, signal {incident.row.signal})"
    )
    _print_tenants(incident, now)
    if incident.tenants:
        out.print(f"next: crmhub incident notify {incident.row.id}")


@incident_app.command("update")
def update_cmd(
    incident_id: Annotated[str, typer.Argument(help="incident id (see: crmhub incident list)")],
    summary: Annotated[str | None, typer.Option(help="what happened")] = None,
    consequences: Annotated[str | None, typer.Option(help="likely consequences")] = None,
    measures: Annotated[str | None, typer.Option(help="measures taken or proposed")] = None,
) -> None:
    """Replace the free text of the controller's report (the ledger records that it changed)."""
    from services.incidents import update_incident

    engine = migrated_engine(load_settings())
    try:
        _repair(engine)
        incident = update_incident(
            engine, incident_id, summary=summary, consequences=consequences, measures=measures
        )
    finally:
        engine.dispose()
    out.print(f"incident {incident.row.id} updated")


async def _start_delivery(settings: Settings, notice_ids: list[str]) -> int:
    """Start each notice's ``NoticeDeliveryWorkflow`` on the control queue now, with the id and reuse
    policy the dispatch schedule uses (``notice:<id>``; a running one is joined, a completed one is
    not run again); returns how many were started or joined."""
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from schemas.notices import NoticeDeliveryInput, notice_workflow_id
    from workers.client import connect
    from workflows.notices import NoticeDeliveryWorkflow

    connected = await connect(settings)
    started = 0
    try:
        for notice_id in notice_ids:
            try:
                await connected.client.start_workflow(
                    NoticeDeliveryWorkflow.run,
                    NoticeDeliveryInput(notice_id=notice_id),
                    id=notice_workflow_id(notice_id),
                    task_queue=settings.temporal.control_task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                    static_summary=f"breach notice {notice_id}",
                )
                started += 1
            except WorkflowAlreadyStartedError:
                pass  # its delivery completed (a contact removed since is no longer owed it)
    finally:
        connected.engine.dispose()
    return started


@incident_app.command("notify")
def notify_cmd(
    incident_id: Annotated[str, typer.Argument(help="incident id (see: crmhub incident list)")],
) -> None:
    """Notify every affected controller not notified yet (one breach notice each, delivery started
    now); tenants already notified are skipped and said so. Exit 1 if a tenant has no contact."""
    from services.incidents import clock, get_incident, notify
    from services.notices import pending_deliveries

    settings = load_settings()
    engine = migrated_engine(settings)
    try:
        _repair(engine)
        outcomes = notify(engine, incident_id)
        aware = get_incident(engine, incident_id).row.became_aware
        pending = [o.notice_id for o in outcomes if o.notice_id and pending_deliveries(engine, o.notice_id)]
    finally:
        engine.dispose()
    missing = []
    for o in outcomes:
        if o.notice_id is None:
            missing.append(o.tenant)
            out.print(
                f"tenant {o.tenant}: [red]NOT notified[/]: it has no contact; add one with "
                f"crmhub tenant contacts add --tenant {o.tenant} --label dpo --email ADDRESS, then run "
                f"crmhub incident notify {incident_id} again", soft_wrap=True,
            )  # fmt: skip
            continue
        assert o.notified is not None
        c = clock(aware, o.notified, o.notified)
        when = f"{format_timestamp(o.notified)}, {c.hours:.1f} h after becoming aware"
        if o.already:
            out.print(
                f"tenant {o.tenant}: already notified at {when} (notice {o.notice_id}); nothing sent again"
            )
        else:
            out.print(
                f"tenant {o.tenant}: notified at {when} (notice {o.notice_id}, {o.contacts} contact(s))"
            )
        if c.flag:
            out.print(f"  [red]{c.flag}[/]")
    if pending:
        try:
            started = asyncio.run(_start_delivery(settings, pending))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}. The notices are recorded and pending; run crmhub incident notify {incident_id} "
                "again once Temporal is up to start their delivery"
            ) from None
        out.print(f"delivery started for {started} notice(s) (workflows notice:<notice id>)")
    if missing:
        raise typer.Exit(1)


def _show(incident: Incident, now: datetime) -> dict[str, Any]:
    from services.incidents import incident_report

    return incident_report(incident, now=now)


def _print_tenants(incident: Incident, now: datetime) -> None:
    from services.incidents import clock

    if not incident.tenants:
        out.print("no tenant's data in scope: no controller is affected (the incident stays on record)")
        return
    table = Table(
        "tenant", "subjects", "counted by", "records", "data categories", "fields", "notified", "clock"
    )
    for t in incident.tenants:
        c = clock(incident.row.became_aware, t.notified, now)
        table.add_row(
            t.tenant, str(t.subjects), t.subjects_basis, str(t.records), ", ".join(t.categories),
            str(len(t.fields)), format_timestamp(t.notified) if t.notified else "-",
            f"{c.hours:.1f} h {c.state}" + (f" — {c.flag}" if c.flag else ""),
        )  # fmt: skip
    out.print(table)


@incident_app.command("list")
def list_cmd(
    tenant: Annotated[str | None, typer.Option(help="only incidents concerning this tenant")] = None,
    as_json: AsJson = False,
) -> None:
    """Every incident: when crmhub became aware, tenants, notified or open, the clock."""
    from services.incidents import clock, list_incidents

    now = datetime.now(UTC)
    engine = migrated_engine(load_settings())
    try:
        rows = list_incidents(engine, tenant=tenant)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([_show(i, now) for i in rows]))
        return
    table = Table("incident", "nature", "signal", "became aware", "tenants", "notified", "clock")
    for i in rows:
        done = sum(1 for t in i.tenants if t.notified)
        flags = {clock(i.row.became_aware, t.notified, now).flag.split(":")[0] for t in i.tenants} - {""}
        table.add_row(
            i.row.id, i.row.nature, i.row.signal, format_timestamp(i.row.became_aware), str(len(i.tenants)),
            f"{done}/{len(i.tenants)}", ", ".join(sorted(flags)) or "ok",
        )  # fmt: skip
    out.print(table)


@incident_app.command("show")
def show_cmd(
    incident_id: Annotated[str, typer.Argument(help="incident id (see: crmhub incident list)")],
    as_json: AsJson = False,
) -> None:
    """One incident: scope, free text, and per tenant the counts, categories and clock."""
    from services.incidents import get_incident

    now = datetime.now(UTC)
    engine = migrated_engine(load_settings())
    try:
        incident = get_incident(engine, incident_id)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(_show(incident, now)))
        return
    r = incident.row
    out.print(f"incident [bold]{r.id}[/]: {r.nature} (signal {r.signal}) — {r.summary}", soft_wrap=True)
    out.print(f"became aware {format_timestamp(r.became_aware)}; opened {format_timestamp(r.opened)}")
    out.print(f"scope: {json.dumps(r.scope)}", soft_wrap=True, highlight=False)
    _print_tenants(incident, now)


@incident_app.command("report")
def report_cmd(
    incident_id: Annotated[str, typer.Argument(help="incident id (see: crmhub incident list)")],
    tenant: Annotated[
        str | None, typer.Option(help="the controller's part only (names no other tenant)")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """What a controller needs for its own Art. 33(3) notification: nature, categories and
    approximate numbers of subjects and records, likely consequences, measures, times."""
    from services.incidents import get_incident, incident_report

    engine = migrated_engine(load_settings())
    try:
        doc = incident_report(get_incident(engine, incident_id), tenant=tenant, now=datetime.now(UTC))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    lines = [
        f"Personal data breach {doc['incident']} — report for the controller's Art. 33(3) notification",
        f"(a) nature: {doc['nature']} — {doc['summary']}",
        f"    window: {doc['window']['from']} to {doc['window']['to']}; signal: {doc['signal']}",
        f"    crmhub (processor) became aware: {doc['became_aware']}",
    ]
    for p in doc["tenants"]:
        basis = (
            "distinct keyed record-id hashes" if p["subjects_basis"] == "keyed_hashes" else "record counts"
        )
        lines += [
            f"controller {p['tenant']}:",
            f"    data subjects (approx.): {p['subjects']} (counted by {basis}); records: {p['records']}",
            f"    data categories: {', '.join(p['data_categories']) or '-'}",
            f"    fields: {', '.join(p['fields']) or '-'}",
            f"    notified: {p['notified'] or 'not yet'} ({p['clock']['hours']} h {p['clock']['state']})"
            + (f" — {p['clock']['flag']}" if p["clock"]["flag"] else ""),
            f"    controller's 72 h (from being notified) end: {p['controller_deadline'] or '-'}",
        ]
    lines += [
        "(b) contact point: the processor's contact in the records of processing "
        "(crmhub audit report --kind art30)",
        f"(c) likely consequences: {doc['likely_consequences'] or 'not stated yet (crmhub incident update)'}",
        f"(d) measures taken or proposed: {doc['measures'] or 'not stated yet (crmhub incident update)'}",
    ]
    out.print("\n".join(lines), soft_wrap=True, highlight=False, markup=False)


@incident_app.command("check-ledger")
def check_ledger_cmd(
    open_incidents: Annotated[
        bool, typer.Option("--open/--no-open", help="open an incident per failing tenant")
    ] = True,
) -> None:
    """Verify every tenant's live ledger against its checkpoints and the signer's journal; a failure
    opens a ``ledger_verification_failed`` incident (unless an open one covers the tenant). Exit 1
    when any ledger fails."""
    from governance.lineage import CheckpointSigner
    from services.incident_signals import ledger_failures, open_ledger_incidents
    from services.wiring import subprocessor_registry

    settings = load_settings()
    key_file = settings.data_dir / settings.governance.signing_key_file
    if not key_file.exists():
        raise ConfigError(
            "no ledger signing key yet (it is created by the first sync or report): nothing signed"
        )
    engine = migrated_engine(settings)
    try:
        _repair(engine)
        failures = ledger_failures(engine, CheckpointSigner.load_or_create(key_file))
        opened = (
            open_ledger_incidents(engine, subprocessor_registry(settings), failures, now=datetime.now(UTC))
            if open_incidents else []
        )  # fmt: skip
    finally:
        engine.dispose()
    if not failures:
        out.print("[green]every tenant's ledger verifies[/] against its checkpoints and the journal")
        return
    for f in failures:
        out.print(f"[red]tenant {f.tenant}: ledger does NOT verify[/]: {f.reason}", soft_wrap=True)
    for f, incident, new in opened:
        verb = "opened" if new else "already open:"
        out.print(f"{verb} incident {incident.row.id} for tenant {f.tenant}", soft_wrap=True)
        out.print(f"next: crmhub incident notify {incident.row.id}")
    raise typer.Exit(1)
