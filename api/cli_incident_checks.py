"""``crmhub incident repair|check-codec``: finishing the incident and notice ledger events an earlier
command owed (:mod:`services.ledger_outbox`) and the codec-token misuse signal (:mod:`services.codec_misuse`).
Attached to ``crmhub incident`` by :func:`api.cli_incident.register`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from api.cli_common import migrated_engine
from api.cli_incident import incident_app
from schemas.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["check_codec_cmd", "repair_cmd", "repair_owed"]

out = Console()


def repair_owed(engine: Engine) -> int:
    """Best effort before an incident command: append the ledger events earlier commands still owe;
    a failure is said (with the fix) and does not stop the command. Returns how many were appended."""
    from services.ledger_outbox import append_owed

    try:
        done = append_owed(engine)
    except Exception as exc:  # the command itself must still run: a breach does not wait
        out.print(
            f"[yellow]ledger events still owed from an earlier failure[/] ({type(exc).__name__}); "
            "run crmhub incident repair", soft_wrap=True,
        )  # fmt: skip
        return 0
    if done.appended:
        out.print(f"appended {len(done.appended)} ledger event(s) an earlier command owed")
    return len(done.appended)


@incident_app.command("repair")
def repair_cmd() -> None:
    """Append every ``incident`` and ``notice`` ledger event an earlier command (incident open, update,
    notify; a notice enqueued or delivered) committed but did not append (it failed partway); each is
    appended once, however often this runs."""
    from services.ledger_outbox import append_owed

    engine = migrated_engine(load_settings())
    try:
        done = append_owed(engine)
    finally:
        engine.dispose()
    for ref, tenant, step in done.appended:
        out.print(f"{ref}: appended {step.split('@')[0]} to tenant {tenant}'s ledger")
    left = f"; {done.remaining} still owed (run it again)" if done.remaining else ""
    out.print(f"{len(done.appended)} ledger event(s) appended{left}")


@incident_app.command("check-codec")
def check_codec_cmd(
    open_incidents: Annotated[
        bool, typer.Option("--open/--no-open", help="open an incident per token misused")
    ] = True,
) -> None:
    """Look for misuse of codec-server tokens in the last window of ``codec_audit`` (requests for
    another namespace, undecryptable payloads, decode volume far above the token's baseline, new
    client hosts when switched on; thresholds ``CRMHUB_CODEC__MISUSE__*``). A token that decoded a
    tenant's payloads opens a ``codec_token_misuse`` incident over those tenants (unless one already
    covers it). Exit 1 when any token is misused."""
    from services.codec_misuse import codec_findings, open_codec_incidents
    from services.wiring import subprocessor_registry

    settings = load_settings()
    rules = settings.codec.misuse
    now = datetime.now(UTC)
    engine = migrated_engine(settings)
    try:
        repair_owed(engine)
        found = codec_findings(engine, rules, now=now)
        opened = (
            open_codec_incidents(engine, subprocessor_registry(settings), found, rules, now=now)
            if open_incidents else [(f, None, False) for f in found]
        )  # fmt: skip
    finally:
        engine.dispose()
    if not found:
        out.print(f"[green]no codec token misused[/] in the last {rules.window} of codec_audit")
        return
    for f, incident, new in opened:
        out.print(f"[red]codec token {f.token_id} misused[/]:", soft_wrap=True)
        for rule, seen in f.rules:
            out.print(f"  {rule.value}: {seen}", soft_wrap=True, highlight=False)
        if incident is None:
            what = "decoded no tenant's payload in the window: no personal data disclosed, no incident"
            out.print(f"  {what}" if f.tenants == () else "  not opened (--no-open)")
            out.print(f"  next: revoke token {f.token_id} (remove it from CRMHUB_CODEC_TOKENS)")
            continue
        tenants = ", ".join(t.tenant for t in incident.tenants)
        verb = "opened" if new else "already open:"
        out.print(f"  {verb} incident {incident.row.id} (tenants {tenants})", soft_wrap=True)
        out.print(f"  next: crmhub incident notify {incident.row.id}")
    raise typer.Exit(1)
