"""``crmhub audit`` commands for auditors: verify a downloaded lineage report offline (no database,
no crmhub deployment: the report, and crmhub's public key obtained independently)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from api.cli_common import migrated_engine, require_tenant
from schemas.errors import ConfigError

__all__ = ["register"]

audit_app = typer.Typer(
    help="Auditor tools: tokens, reports, OpenLineage export, offline verification.", no_args_is_help=True
)
out = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    report: Annotated[Path, typer.Argument(help="lineage report JSON (crmhub.lineage.report/2 or /1)")],
    public_key: Annotated[
        Path,
        typer.Option(
            "--public-key",
            help="crmhub's Ed25519 public key (PEM or base64), obtained out of band: it is pinned, "
            "the key the report names is ignored",
        ),
    ],
    known_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--known-checkpoint",
            help="the latest checkpoint you saw before (JSON: a checkpoint, an /audit/integrity/checkpoint "
            "answer, or an earlier report): the report must extend it",
        ),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--save-checkpoint", help="after success, write the verified checkpoint here (pin it next time)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Recompute every leaf and the Merkle root, check the signed checkpoints and the consistency
    proofs between them; exit 1 naming the first bad entry if anything was altered, deleted or
    reordered, if entries lie beyond the last signature, or if the report does not extend the
    known checkpoint."""
    from governance.lineage import report_from_json, verify
    from governance.lineage._signing import encode_public_key

    try:
        loaded = report_from_json(report.read_bytes())
        key = public_key.read_text()
        pinned = encode_public_key(key)
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{report} is not a crmhub lineage report: {exc}") from None
    if not loaded.checkpoints:
        raise ConfigError(f"{report} holds no signed checkpoint: nothing to verify against")
    known = _read_known_checkpoint(known_checkpoint) if known_checkpoint else None
    last = loaded.checkpoints[-1]
    result = verify(loaded, last, key, known=known)
    tail = result.unverified_tail
    data = {
        "ok": result.ok,
        "tenant": loaded.tenant,
        "format": loaded.format,
        "entries": len(loaded.entries),
        "checkpoints": len(loaded.checkpoints),
        "consistency_proofs": len(loaded.consistency),
        "reason": result.reason,
        "first_bad_index": result.first_bad_index,
        "bad_window": result.bad_window,
        "unverified_tail": tail,
        "unverified_indexes": [last.size, last.size + tail] if tail else None,
        "known_checkpoint_size": known.size if known else None,
    }
    notes = []
    if loaded.public_key is not None and loaded.public_key != pinned:
        notes.append("the report names another public key; it was ignored (the pinned key decides)")
    if loaded.format == "crmhub.lineage.report/1":
        notes.append(
            "format 1 report: no consistency proofs; the checkpoints are checked by recomputing roots"
        )
    if known is None:
        notes.append("no --known-checkpoint: this proves the report is signed and whole, not that it "
                     "extends what you saw before")  # fmt: skip
    if as_json:
        out.print_json(json.dumps({**data, "notes": notes}))
    elif result.ok:
        out.print(
            f"[green]verified[/]: {len(loaded.entries):,} events of {loaded.tenant}, "
            f"{len(loaded.checkpoints)} signed checkpoint(s), root matches — {result.reason}",
            soft_wrap=True,
        )
    else:
        where = f" first bad index {result.first_bad_index}" if result.first_bad_index is not None else ""
        out.print(f"[red]NOT verified[/]:{where} — {result.reason}", soft_wrap=True)
        if tail:
            out.print(
                f"[red]UNVERIFIED TAIL[/]: entries {last.size}..{last.size + tail - 1} ({tail} entries) "
                "are not covered by any signed checkpoint — treat them as unproven",
                soft_wrap=True,
            )
    if not as_json:
        for note in notes:
            out.print(f"note: {note}", soft_wrap=True, highlight=False)
    if not result.ok:
        raise typer.Exit(1)
    if save_checkpoint is not None:
        save_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint.write_text(last.model_dump_json())


def _read_known_checkpoint(path: Path) -> Any:
    """A checkpoint from ``path``: a checkpoint object, an ``/audit/integrity/checkpoint`` answer
    (``{"checkpoint": …}``) or a lineage report (its last checkpoint)."""
    from schemas.lineage import Checkpoint

    fix = (
        "give a checkpoint JSON (from --save-checkpoint or GET /audit/integrity/checkpoint) or an earlier "
        "lineage report"
    )
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"--known-checkpoint {path} is not JSON; {fix}") from None
    if isinstance(doc, dict) and isinstance(doc.get("checkpoint"), dict):
        doc = doc["checkpoint"]
    elif isinstance(doc, dict) and isinstance(doc.get("checkpoints"), list):
        if not doc["checkpoints"]:
            raise ConfigError(f"--known-checkpoint {path} is a report without checkpoints; {fix}")
        doc = doc["checkpoints"][-1]
    try:
        return Checkpoint.model_validate(doc)
    except ValueError:
        raise ConfigError(f"--known-checkpoint {path} is not a crmhub checkpoint; {fix}") from None


# -- auditor tokens, reports, OpenLineage ------------------------------------------------------------

token_app = typer.Typer(
    help="Auditor API tokens: one tenant, read-only, stored hashed.", no_args_is_help=True
)
audit_app.add_typer(token_app, name="token")


def _engine() -> Any:
    from schemas.settings import load_settings

    return migrated_engine(load_settings())


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option("--tenant", help="the one tenant the token may read")],
    name: Annotated[str, typer.Option("--name", help="who holds it, e.g. 'KPMG audit 2025'")],
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1, help="lifetime")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Create an auditor token and print it once (only its hash is stored)."""
    from datetime import UTC, datetime, timedelta

    from schemas.settings import load_settings
    from services.access_ledger import record_cli_access
    from services.wiring import make_vault
    from store import auditors

    engine = _engine()
    try:
        require_tenant(engine, tenant)
        now = datetime.now(UTC)
        expires = now + timedelta(days=expires_days) if expires_days else None
        with engine.begin() as conn:
            row, token = auditors.create_token(conn, tenant=tenant, name=name, now=now, expires_at=expires)
        settings = load_settings()
        record_cli_access(settings, engine, make_vault(settings, engine), tenant, "auditor_token_create",
                          target=f"auditor token {row.id}")  # fmt: skip
    finally:
        engine.dispose()
    if as_json:
        out.print_json(json.dumps({"id": row.id, "tenant": row.tenant, "name": row.name, "token": token}))
        return
    out.print(f"auditor token {row.id} for tenant {tenant} ({name}); shown once, store it now:")
    out.print(token, soft_wrap=True, highlight=False)
    out.print("use it as: Authorization: Bearer <token> on the /audit API")


@token_app.command("list")
def token_list(
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Auditor tokens (ids, tenants, names, dates; never the tokens)."""
    from store import auditors

    engine = _engine()
    try:
        with engine.connect() as conn:
            rows = auditors.list_tokens(conn, tenant)
    finally:
        engine.dispose()
    data = [
        {
            "id": r.id,
            "tenant": r.tenant,
            "name": r.name,
            "created": r.created.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            "last_used": r.last_used.isoformat() if r.last_used else None,
        }
        for r in rows
    ]
    if as_json:
        out.print_json(json.dumps(data))
        return
    for d in data:
        state = "revoked" if d["revoked_at"] else "active"
        out.print(f"{d['id']}  {d['tenant']:<16} {state:<8} {d['name']}  last used {d['last_used'] or '-'}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="token id (from token list)")]) -> None:
    """Revoke a token: its next request is refused (and logged)."""
    from datetime import UTC, datetime

    from store import auditors

    engine = _engine()
    try:
        with engine.begin() as conn:
            done = auditors.revoke_token(conn, token_id, now=datetime.now(UTC))
    finally:
        engine.dispose()
    if not done:
        raise ConfigError(f"no active auditor token {token_id!r}")
    out.print(f"auditor token {token_id} revoked")


def _emit(data: bytes, output: Path | None) -> None:
    if output is None:
        typer.echo(data.decode("utf-8"), nl=not data.endswith(b"\n"))
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
        Console(stderr=True).print(f"written to {output}")


@audit_app.command("report")
def audit_report(
    tenant: Annotated[str, typer.Option("--tenant")],
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 date/datetime, inclusive")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 date/datetime, exclusive")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json | csv | html")] = "json",
    kind: Annotated[
        str, typer.Option("--kind", help="lineage | subprocessors | transfers | incidents | art30 | ledger")
    ] = "lineage",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file (default: stdout)")] = None,
) -> None:
    """The auditor's reports from the command line (the same as the /audit API). ``--kind ledger``
    signs a checkpoint and writes the signed ledger report that ``crmhub audit verify`` checks."""
    from api.audit import reports
    from governance.lineage import CheckpointSigner, Ledger, report_to_json
    from governance.registry import load_registry
    from schemas.settings import load_settings
    from services.wiring import default_subprocessors_file

    if fmt not in ("json", "csv", "html"):
        raise ConfigError("--format must be json, csv or html")
    if kind not in ("lineage", "subprocessors", "transfers", "incidents", "art30", "ledger"):
        raise ConfigError("--kind must be lineage, subprocessors, transfers, incidents, art30 or ledger")
    if fmt != "json" and kind != "lineage":
        raise ConfigError("csv and html are available for --kind lineage; the others are JSON")
    settings = load_settings()
    period = reports.Period.parse(start, end)
    engine = _engine()
    try:
        require_tenant(engine, tenant)
        registry = load_registry(settings.governance.subprocessors_file or default_subprocessors_file())
        if kind == "ledger":
            signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
            ledger = Ledger(engine, tenant)
            report = ledger.export_report(
                ledger.checkpoint(signer), public_key=signer.public_key, journal=signer.journal
            )
            _emit(report_to_json(report), output)
            return
        data: dict[str, Any]
        if kind == "lineage":
            data = reports.lineage_report(engine, tenant, period)
            if fmt == "csv":
                _emit(reports.lineage_csv(data).encode(), output)
                return
            if fmt == "html":
                from api.audit.cover import cover_page

                cover = cover_page(engine, registry, tenant, period, data)
                _emit(reports.lineage_html(data, cover).encode(), output)
                return
        elif kind == "subprocessors":
            data = reports.subprocessor_report(engine, registry, tenant, period)
        elif kind == "transfers":
            data = reports.transfer_report(engine, registry, tenant, period)
        elif kind == "incidents":
            from datetime import UTC, datetime

            from api.audit.incidents import incident_history

            now = datetime.now(UTC)
            data = incident_history(engine, tenant, reports.tenant_events(engine, tenant), now=now)
        else:
            data = reports.records_of_processing(engine, registry, tenant)
    finally:
        engine.dispose()
    _emit(json.dumps(data, indent=1).encode(), output)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """crmhub's ledger public key (PEM) — hand it to auditors through a channel of its own."""
    from governance.lineage import CheckpointSigner
    from schemas.settings import load_settings

    settings = load_settings()
    path = settings.data_dir / settings.governance.signing_key_file
    if not path.exists():
        raise ConfigError("no ledger signing key yet (it is created by the first sync or report)")
    typer.echo(CheckpointSigner.load_or_create(path).public_key_pem(), nl=False)


@audit_app.command("export-openlineage")
def audit_export_openlineage(
    tenant: Annotated[str, typer.Option("--tenant")],
    run: Annotated[str | None, typer.Option("--run", help="one run id only")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file (default: stdout)")] = None,
) -> None:
    """The tenant's runs as OpenLineage 2-0-2 RunEvents (JSON list) with crmhub's custom facets."""
    from api.audit import reports
    from governance.openlineage import run_events_json

    engine = _engine()
    try:
        require_tenant(engine, tenant)
        events = [e for _, e in reports.tenant_events(engine, tenant) if run is None or e.run_id == run]
    finally:
        engine.dispose()
    if run is not None and not events:
        raise ConfigError(f"tenant {tenant!r} has no lineage for run {run!r}")
    _emit(json.dumps(run_events_json(events), indent=1).encode(), output)


@audit_app.command("access-log")
def audit_access_log(
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Who called the audit API (token ids, routes, outcomes), newest first; denied requests as one
    line per hour, reason and client hash with their count."""
    from store import auditors

    engine = _engine()
    try:
        with engine.connect() as conn:
            rows = auditors.list_access(conn, tenant, limit=limit)
    finally:
        engine.dispose()
    data = [
        {"at": r.at.isoformat(), "token_id": r.token_id, "tenant": r.tenant, "route": r.route,
         "query": r.query, "outcome": r.outcome, "client": r.client, "count": r.count}
        for r in rows
    ]  # fmt: skip
    if as_json:
        out.print_json(json.dumps(data))
        return
    for d in data:
        times = f" ({d['count']} requests)" if d["count"] != 1 else ""
        out.print(f"{d['at']}  {d['outcome']:<8} {d['token_id'] or '-':<16} {d['route']} {d['query']}{times}")
