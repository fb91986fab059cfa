"""``crmhub web``: serve the web app; ``crmhub web user add``: create a login for a tenant.

::

    crmhub web [--host 127.0.0.1] [--port 8000] [--redirect-uri URL]
    crmhub web user add --tenant T --email E     # password from CRMHUB_WEB_PASSWORD, else prompted

The OAuth redirect URI defaults to ``http://<host>:<port>/oauth/callback`` (the sandbox registers it
for 127.0.0.1 and localhost on port 8000); set ``--redirect-uri`` or ``oauth.redirect_uri``
(``CRMHUB_OAUTH__REDIRECT_URI``) to the one registered with your Salesforce/HubSpot apps.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from api.cli_common import migrated_engine, require_tenant
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

__all__ = ["add_user", "register"]

web_app = typer.Typer(
    help="The web app for customers and ops (connect CRMs, syncs, instruction editor, /metrics).",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Web app users (one tenant each).", no_args_is_help=True)
web_app.add_typer(user_app, name="user")
out = Console()

PASSWORD_ENV = "CRMHUB_WEB_PASSWORD"  # noqa: S105 - the variable's name, not a password
MIN_PASSWORD = 12


def register(app: typer.Typer) -> None:
    app.add_typer(web_app, name="web")


@web_app.callback()
def web_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    redirect_uri: Annotated[
        str | None, typer.Option(help="OAuth redirect URI (default http://HOST:PORT/oauth/callback)")
    ] = None,
) -> None:
    """Serve the web app until Ctrl-C (OpenAPI at /openapi.json)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from api.web import create_app
    from store.migrate import ensure_current

    settings = load_settings()
    ensure_current(settings.effective_database_url)
    shown = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only compared
    redirect = redirect_uri or settings.oauth.redirect_uri or f"http://{shown}:{port}/oauth/callback"
    app = create_app(settings, redirect_uri=redirect)
    out.print(f"crmhub web on http://{shown}:{port} (OAuth callback {redirect}); Ctrl-C stops it")
    # access_log off: callback URLs carry the OAuth code and state
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def add_user(settings: Settings, tenant: str, email: str, password: str) -> str:
    """Create a web user for an existing tenant; returns the user id."""
    from api.web.security import hash_password
    from governance.pseudonym import Pseudonymizer
    from services.wiring import make_vault
    from store import users as user_store

    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise ConfigError("--email must be an email address")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must be at least {MIN_PASSWORD} characters")
    engine = migrated_engine(settings)
    try:
        require_tenant(engine, tenant)
        vault = make_vault(settings, engine)
        user_id = str(uuid.uuid4())
        email_hash = Pseudonymizer(vault).keyed_hash(tenant, email)
        sealed = vault.seal(
            tenant, email.encode("utf-8"), dataset="web-user-email", object_id=user_id, purpose="web-login"
        )
        with engine.begin() as conn:
            user_store.create_user(
                conn,
                id=user_id,
                tenant=tenant,
                email_hash=email_hash,
                email_sealed=sealed,
                password_hash=hash_password(password),
                now=datetime.now(UTC),
            )
    finally:
        engine.dispose()
    return user_id


@user_app.command("add")
def user_add(
    tenant: Annotated[str, typer.Option(help="the tenant the user acts for")],
    email: Annotated[str, typer.Option(help="login email")],
) -> None:
    """Create a login (password from CRMHUB_WEB_PASSWORD, else prompted twice)."""
    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    user_id = add_user(load_settings(), tenant, email, password)
    out.print(f"web user created for tenant [bold]{tenant}[/] (id {user_id})")
