"""``crmhub audit`` commands for auditors: verify a downloaded lineage report offline (no database,
no crmhub deployment: the report, and crmhub's public key obtained independently)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from schemas.errors import ConfigError

__all__ = ["register"]

audit_app = typer.Typer(help="Auditor tools: verify lineage reports offline.", no_args_is_help=True)
out = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    report: Annotated[Path, typer.Argument(help="lineage report JSON (crmhub.lineage.report/1)")],
    public_key: Annotated[Path, typer.Option("--public-key", help="crmhub's Ed25519 public key (PEM)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Recompute every leaf and the Merkle root, check the signed checkpoints; exit 1 naming the
    first bad entry if anything was altered, deleted or reordered."""
    from governance.lineage import report_from_json, verify

    try:
        loaded = report_from_json(report.read_bytes())
        key = public_key.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{report} is not a crmhub lineage report: {exc}") from None
    if not loaded.checkpoints:
        raise ConfigError(f"{report} holds no signed checkpoint: nothing to verify against")
    result = verify(loaded, loaded.checkpoints[-1], key)
    data = {
        "ok": result.ok,
        "tenant": loaded.tenant,
        "entries": len(loaded.entries),
        "checkpoints": len(loaded.checkpoints),
        "reason": result.reason,
        "first_bad_index": result.first_bad_index,
        "bad_window": result.bad_window,
    }
    if as_json:
        out.print_json(json.dumps(data))
    elif result.ok:
        out.print(
            f"[green]verified[/]: {len(loaded.entries):,} events of {loaded.tenant}, "
            f"{len(loaded.checkpoints)} signed checkpoint(s), root matches"
        )
    else:
        where = f" first bad index {result.first_bad_index}" if result.first_bad_index is not None else ""
        out.print(f"[red]NOT verified[/]:{where} — {result.reason}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)
