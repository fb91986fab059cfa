"""``crmhub connect`` and ``crmhub connections``: connect a CRM with OAuth from a terminal.

::

    crmhub connect salesforce|hubspot --tenant T [--no-browser] [--allow-exports]
                   [--redirect-uri http://127.0.0.1:8765/callback] [--timeout 300]
    crmhub connections list [--tenant T] [--json]
    crmhub connections disconnect ID [--force]

``connect`` prints the provider's authorize URL (and opens a browser unless ``--no-browser``),
listens on the loopback redirect URI for exactly one callback (bounded by ``--timeout``), completes
the code exchange and prints the new connection's id and status.

The OAuth clients are the configured ones (:mod:`services.oauth_clients`): the ``oauth.salesforce``
/ ``oauth.hubspot`` settings (``CRMHUB_OAUTH__SALESFORCE__CLIENT_ID`` …), else the clients file
``<data_dir>/oauth-clients.yaml`` — which ``crmhub sandbox`` writes for its CRMs, so with a sandbox
running on the same data_dir there is nothing to set.

The redirect URI (``--redirect-uri``, else ``oauth.redirect_uri``, else
``http://127.0.0.1:8765/callback`` or the app's first registered one) must be registered with the
app exactly and be ``http://`` on loopback: the CLI listens there itself. Tokens are sealed by the
vault (the configured key provider) and stored in the configured database.
"""

from __future__ import annotations

import html
import json
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs, urlsplit

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import AuthError, ConfigError, CrmhubError
from schemas.settings import Settings, load_settings

if TYPE_CHECKING:  # the OAuth stack (httpx, vault, cryptography) loads only when a command runs
    from sqlalchemy.engine import Engine

    from services.credentials import OAuthService
    from store.connections import ConnectionInfo

__all__ = ["CallbackListener", "complete_from_redirect", "connect_cmd", "connections_app"]

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8765/callback"  # services.oauth_clients.CLI_REDIRECT_URI


class ProviderName(StrEnum):
    """The providers ``crmhub connect`` knows (mirrors :class:`connectors.oauth.Provider`)."""

    SALESFORCE = "salesforce"
    HUBSPOT = "hubspot"


connections_app = typer.Typer(help="CRM connections: list and disconnect.", no_args_is_help=True)
out = Console()


# ---- wiring ----------------------------------------------------------------------------------------


def _engine(settings: Settings) -> Engine:
    """The configured database on the current schema: the embedded SQLite default migrates itself on
    first use (a fresh data dir just works); PostgreSQL must be migrated deliberately."""
    from api.cli_common import migrated_engine

    return migrated_engine(settings)


def _service(settings: Settings, *, redirect_uri: str | None, provider: str | None = None) -> OAuthService:
    """The credentials service of the configured OAuth clients (:mod:`services.wiring`): of
    ``provider`` only when given (another provider's redirect URI is not this command's concern)."""
    from services.wiring import credentials, make_vault

    engine = _engine(settings)
    only = None if provider is None else (provider,)
    try:
        return credentials(
            settings, engine, make_vault(settings, engine), redirect_uri=redirect_uri, only=only
        )
    except BaseException:
        engine.dispose()
        raise


def complete_from_redirect(
    service: OAuthService, provider: str, tenant: str, params: Mapping[str, str], redirect_uri: str
) -> ConnectionInfo:
    """Finish an authorization from the query parameters the provider sent the browser back with
    (``state`` and ``code``, or ``error``) to ``redirect_uri``: exchange the code, store the sealed
    tokens (:meth:`OAuthService.complete_authorization`, which raises ``OAuthCallbackError``)."""
    return service.complete_authorization(
        provider,
        tenant=tenant,
        state=params.get("state"),
        code=params.get("code"),
        redirect_uri=redirect_uri,
        error=params.get("error"),
    )


# ---- the loopback listener --------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackOutcome:
    """What the callback handler decided: the HTTP answer for the browser and the CLI's result."""

    http_status: int
    message: str
    connection: ConnectionInfo | None = None
    error: CrmhubError | None = None


class CallbackListener:
    """Listens on a loopback ``http://`` redirect URI for one OAuth callback.

    The socket is bound on construction (so a port in use fails before the user is sent to the
    provider); :meth:`wait` serves requests until the callback path is hit once or ``timeout_s``
    passes. Other paths (``/favicon.ico``) get 404. Request lines are never logged: they hold the
    code and the state.
    """

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(
                f"the CLI receives the callback itself, so the redirect URI must be http:// on loopback "
                f"(e.g. {DEFAULT_REDIRECT_URI}), registered with the app; got {redirect_uri}"
            )
        self.path = parts.path or "/"
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        port = parts.port or 80
        self._outcome: CallbackOutcome | None = None
        self._handle: Callable[[dict[str, str]], CallbackOutcome] | None = None
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a connection that sends nothing does not hold the listener

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != listener.path or listener._outcome is not None or listener._handle is None:
                    self.send_error(404)
                    return
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                outcome = listener._handle(params)
                listener._outcome = outcome
                title = "Connected" if outcome.connection is not None else "Connection failed"
                body = (
                    f"<!doctype html><html><head><meta charset='utf-8'><title>crmhub: {title}</title></head>"
                    f"<body><h1>{title}</h1><p>{html.escape(outcome.message)}</p>"
                    "<p>You can close this window and return to the terminal.</p></body></html>"
                ).encode()
                self.send_response(outcome.http_status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        try:
            self._server = HTTPServer((host or "127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} for the OAuth callback ({exc.strerror}); stop what uses "
                "the port or pass another registered --redirect-uri"
            ) from None
        self._server.timeout = 0.25

    def wait(self, handle: Callable[[dict[str, str]], CallbackOutcome], timeout_s: float) -> CallbackOutcome:
        """Serve until one callback was handled by ``handle``; :class:`AuthError` after ``timeout_s``."""
        self._handle = handle
        deadline = time.monotonic() + timeout_s
        try:
            while self._outcome is None and time.monotonic() < deadline:
                self._server.handle_request()
        finally:
            self._server.server_close()
        if self._outcome is None:
            raise AuthError(
                f"no OAuth callback within {timeout_s:.0f}s; run 'crmhub connect' again and finish the "
                "consent in time",
                code="callback_timeout",
            )
        return self._outcome

    def close(self) -> None:
        """Release the port (if :meth:`wait` was never called)."""
        self._server.server_close()


# ---- commands ----------------------------------------------------------------------------------------


def connect_cmd(
    provider: Annotated[ProviderName, typer.Argument(help="salesforce or hubspot")],
    tenant: Annotated[
        str, typer.Option("--tenant", help="the customer (controller) this connection belongs to")
    ],
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="only print the URL (headless machines, tests)")
    ] = False,
    redirect_uri: Annotated[
        str | None,
        typer.Option(help=f"loopback redirect URI registered with the app (default {DEFAULT_REDIRECT_URI})"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the consent", min=1, max=600)] = 300.0,
    allow_exports: Annotated[
        bool,
        typer.Option(
            "--allow-exports",
            help="HubSpot only: also ask for the crm.export scope (a Super Admin must grant it), so that "
            "full reads of large objects go through HubSpot's Exports API (HubSpot keeps the export "
            "file and lists it in the portal's export log)",
        ),
    ] = False,
    allow_custom_objects: Annotated[
        bool,
        typer.Option(
            "--allow-custom-objects",
            help="HubSpot only: also ask for the custom-object scopes (crm.schemas.custom.read, "
            "crm.objects.custom.read/write), so the portal's custom objects can be synced",
        ),
    ] = False,
) -> None:
    """Connect a CRM with OAuth (authorization code + PKCE): open the consent page, wait for the callback."""
    from connectors.hubspot.config import EXPORT_SCOPE
    from connectors.hubspot.objects import CUSTOM_SCOPES
    from connectors.oauth import OAuthCallbackError
    from services.wiring import connector_factory

    settings = load_settings()
    if allow_exports and provider is not ProviderName.HUBSPOT:
        raise typer.BadParameter("--allow-exports is for hubspot only (Salesforce reads in bulk without it)")
    if allow_custom_objects and provider is not ProviderName.HUBSPOT:
        raise typer.BadParameter("--allow-custom-objects is for hubspot only (Salesforce lists every object)")
    extra_scopes = (
        *((EXPORT_SCOPE,) if allow_exports else ()),
        *(CUSTOM_SCOPES if allow_custom_objects else ()),
    )
    service = _service(settings, redirect_uri=redirect_uri, provider=provider.value)
    try:
        cfg = service.config(provider)
        listener = CallbackListener(cfg.redirect_uri)
        try:
            request = service.begin_authorization(tenant, provider, extra_scopes=extra_scopes)
        except BaseException:
            listener.close()
            raise
        typer.echo(f"Open this URL to let crmhub access {provider.value} for tenant {tenant}:")
        typer.echo(request.url)
        typer.echo(f"Waiting up to {timeout:.0f}s for the redirect to {cfg.redirect_uri} ...")
        if not no_browser:
            webbrowser.open(request.url)

        def handle(params: dict[str, str]) -> CallbackOutcome:
            try:
                info = complete_from_redirect(service, provider, tenant, params, cfg.redirect_uri)
            except OAuthCallbackError as exc:
                return CallbackOutcome(exc.http_status, str(exc), error=exc)
            except CrmhubError as exc:
                return CallbackOutcome(502, str(exc), error=exc)
            # where the vendor hosts the data, stored with the connection (failed: asked at sync create)
            region = connector_factory(settings, service.engine, service).locate(info.id)
            info = info.model_copy(update={"region_instance": region})
            return CallbackOutcome(
                200, f"crmhub is connected to {provider.value} (connection {info.id}).", info
            )

        outcome = listener.wait(handle, timeout)
    finally:
        service.close()
        service.engine.dispose()
    if outcome.error is not None:
        raise outcome.error
    info = outcome.connection
    assert info is not None
    typer.echo(f"connection id: {info.id}")
    out.print(
        f"[green]connected[/] {info.provider} for tenant {info.tenant}: status {info.status.value}, "
        f"instance {info.instance_url}, "
        f"data hosted at {info.region_instance or 'unknown (asked again at sync create)'}, "
        f"scopes {' '.join(info.scopes)}",
        soft_wrap=True,
    )


@connections_app.command("list")
def connections_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's connections")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """List connections: id, tenant, provider, status, instance, scopes, last update (never tokens)."""
    from store import connections as store

    engine = _engine(load_settings())
    try:
        with engine.connect() as conn:
            rows = [r.info() for r in store.list_connections(conn, tenant=tenant)]
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table(title=f"crmhub connections ({len(rows)})")
    for col in ("id", "tenant", "provider", "status", "instance", "scopes", "updated"):
        table.add_column(col, overflow="fold")
    for r in rows:
        color = {"active": "green", "reauthorization_required": "yellow"}.get(r.status.value, "red")
        status = f"[{color}]{r.status.value}[/]" + (f"\n{r.status_message}" if r.status_message else "")
        table.add_row(
            r.id,
            r.tenant,
            r.provider,
            status,
            (r.instance_url or "-") + (f"\ndata hosted at {r.region_instance}" if r.region_instance else ""),
            " ".join(r.scopes),
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}Z",
        )
    out.print(table)


@connections_app.command("disconnect")
def connections_disconnect(
    connection_id: Annotated[
        str, typer.Argument(metavar="ID", help="the connection id (see: connections list)")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="delete local tokens even if the provider cannot be reached")
    ] = False,
) -> None:
    """Revoke a connection's tokens at the provider and delete them here (status becomes revoked)."""
    service = _service(load_settings(), redirect_uri=None)
    try:
        info = service.disconnect(connection_id, force=force)
    finally:
        service.close()
        service.engine.dispose()
    out.print(f"{info.id}: {info.status.value} ({info.status_message})", soft_wrap=True)
