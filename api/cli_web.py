"""``crmhub web``: serve the web app; ``crmhub web user …``: manage the tenants' logins.

::

    crmhub web [--host 127.0.0.1] [--port 8000] [--redirect-uri URL]
    crmhub web user add     --tenant T --email E   # password from CRMHUB_WEB_PASSWORD, else prompted
    crmhub web user list    --tenant T             # email, created, last login, enabled, sessions
    crmhub web user disable --tenant T --email E   # refuses logins, ends its sessions at once
    crmhub web user enable  --tenant T --email E
    crmhub web user remove  --tenant T --email E   # deletes the user and its sessions
    crmhub web user passwd  --tenant T --email E   # new password (as for add); ends its sessions
    crmhub web user logout  --tenant T --email E   # ends its sessions

The server runs uvicorn with its own forwarded-header handling off (the app believes
``X-Forwarded-For``/``-Proto`` only from ``web.trusted_proxies``), idle keep-alive connections closed
after ``web.keep_alive_timeout_s`` and at most ``web.max_connections`` at once (503 beyond).

The OAuth redirect URI defaults to ``http://<host>:<port>/oauth/callback`` (the sandbox registers it
for 127.0.0.1 and localhost on port 8000); set ``--redirect-uri`` or ``oauth.redirect_uri``
(``CRMHUB_OAUTH__REDIRECT_URI``) to the one registered with your Salesforce/HubSpot apps.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from api.cli_common import migrated_engine, require_tenant
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

if TYPE_CHECKING:
    import uvicorn
    from sqlalchemy.engine import Engine

    from store.users import UserRow

__all__ = [
    "add_user",
    "change_password",
    "find_web_user",
    "list_web_users",
    "register",
    "remove_user",
    "server_config",
    "set_user_enabled",
    "web_user_logout",
]

web_app = typer.Typer(
    help="The web app for customers and ops (connect CRMs, syncs, instruction editor, /metrics).",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Web app users (one tenant each).", no_args_is_help=True)
web_app.add_typer(user_app, name="user")
out = Console()

PASSWORD_ENV = "CRMHUB_WEB_PASSWORD"  # noqa: S105 - the variable's name, not a password


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
    uvicorn.Server(server_config(settings, app, host=host, port=port)).run()


def server_config(settings: Settings, app: Any, *, host: str, port: int) -> uvicorn.Config:
    """How ``crmhub web`` runs uvicorn (tests serve the app with the same configuration)."""
    import uvicorn

    web = settings.web
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,  # callback URLs carry the OAuth code and state
        log_level="warning",
        # uvicorn would believe X-Forwarded-For from 127.0.0.1: the app decides (web.trusted_proxies)
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=web.keep_alive_timeout_s,
        limit_concurrency=web.max_connections,
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
    )


def _check_password(password: str) -> None:
    from api.web.security import MIN_PASSWORD

    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must be at least {MIN_PASSWORD} characters")


@contextmanager
def _engine(settings: Settings, tenant: str) -> Iterator[Engine]:
    engine = migrated_engine(settings)
    try:
        require_tenant(engine, tenant)
        yield engine
    finally:
        engine.dispose()


def add_user(settings: Settings, tenant: str, email: str, password: str, role: str = "admin") -> str:
    """Create a web user for an existing tenant that was not offboarded, with ``role`` (admin ·
    editor · viewer); returns the user id."""
    from api.web.security import hash_password
    from governance.pseudonym import Pseudonymizer
    from services.access_ledger import record_cli_access
    from services.wiring import make_vault
    from store import keys as key_store
    from store import users as user_store

    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise ConfigError("--email must be an email address")
    _check_password(password)
    with _engine(settings, tenant) as engine:
        with engine.connect() as conn:
            shredded = key_store.shredded_at(conn, tenant)
        if shredded is not None:
            raise ConfigError(
                f"tenant {tenant!r} was offboarded (its keys were destroyed at {shredded:%Y-%m-%d %H:%M} "
                f"UTC): it can have no web users; create a new tenant with: crmhub tenant create NEW_ID"
            )
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
                role=role,
            )
        record_cli_access(settings, engine, vault, tenant, "user_add", target=f"web user {user_id} as {role}")
    return user_id


def find_web_user(settings: Settings, engine: Engine, tenant: str, email: str) -> UserRow:
    """The tenant's user with this email; a :class:`ConfigError` naming ``crmhub web user list`` if none."""
    from governance.pseudonym import Pseudonymizer
    from services.wiring import make_vault
    from store import users as user_store

    email_hash = Pseudonymizer(make_vault(settings, engine)).keyed_hash(tenant, email.strip().lower())
    with engine.connect() as conn:
        user = user_store.find_user(conn, tenant, email_hash)
    if user is None:
        raise ConfigError(
            f"tenant {tenant!r} has no web user with this email; see: crmhub web user list --tenant {tenant}"
        )
    return user


def list_web_users(settings: Settings, tenant: str) -> list[dict[str, Any]]:
    """The tenant's users: id, email (opened from the vault), created, last login, enabled, live
    session count."""
    from services.wiring import make_vault
    from store import users as user_store

    now = datetime.now(UTC)
    with _engine(settings, tenant) as engine:
        vault = make_vault(settings, engine)
        with engine.connect() as conn:
            users = user_store.list_users(conn, tenant)
            counts = {u.id: user_store.count_sessions(conn, u.id, now=now) for u in users}
        return [
            {
                "id": u.id,
                "email": vault.open(
                    tenant, u.email_sealed, dataset="web-user-email", object_id=u.id, purpose="web-login"
                ).decode("utf-8"),
                "created": u.created,
                "last_login": u.last_login,
                "enabled": u.enabled,
                "sessions": counts[u.id],
                "role": u.role,
            }
            for u in users
        ]


def set_user_enabled(settings: Settings, tenant: str, email: str, *, enabled: bool) -> str:
    """Enable or disable the user (disabling ends its sessions); returns its id."""
    from store import users as user_store

    with _engine(settings, tenant) as engine:
        user = find_web_user(settings, engine, tenant, email)
        with engine.begin() as conn:
            user_store.set_disabled(conn, user.id, at=None if enabled else datetime.now(UTC))
    return user.id


def set_user_role(settings: Settings, tenant: str, email: str, role: str) -> str:
    """Change the user's role (their live sessions see it on their next request); returns its id."""
    from services.access_ledger import record_cli_access
    from services.wiring import make_vault
    from store import users as user_store

    with _engine(settings, tenant) as engine:
        user = find_web_user(settings, engine, tenant, email)
        with engine.begin() as conn:
            user_store.set_role(conn, user.id, role)
        record_cli_access(
            settings,
            engine,
            make_vault(settings, engine),
            tenant,
            "user_role",
            target=f"web user {user.id} as {role}",
        )
    return user.id


def remove_user(settings: Settings, tenant: str, email: str) -> str:
    """Delete the user and its sessions; returns its id."""
    from services.access_ledger import record_cli_access
    from services.wiring import make_vault
    from store import users as user_store

    with _engine(settings, tenant) as engine:
        user = find_web_user(settings, engine, tenant, email)
        with engine.begin() as conn:
            user_store.delete_user(conn, user.id)
        record_cli_access(
            settings,
            engine,
            make_vault(settings, engine),
            tenant,
            "user_remove",
            target=f"web user {user.id}",
        )
    return user.id


def change_password(settings: Settings, tenant: str, email: str, password: str) -> int:
    """Set the user's password and end all its sessions; returns how many ended."""
    from api.web.security import hash_password
    from store import users as user_store

    _check_password(password)
    with _engine(settings, tenant) as engine:
        user = find_web_user(settings, engine, tenant, email)
        with engine.begin() as conn:
            user_store.set_password_hash(conn, user.id, hash_password(password))
            return user_store.end_sessions(conn, user.id)


def web_user_logout(settings: Settings, tenant: str, email: str) -> int:
    """End all the user's sessions; returns how many."""
    from services.access_ledger import record_cli_access
    from services.wiring import make_vault
    from store import users as user_store

    with _engine(settings, tenant) as engine:
        user = find_web_user(settings, engine, tenant, email)
        with engine.begin() as conn:
            ended = user_store.end_sessions(conn, user.id)
        record_cli_access(
            settings,
            engine,
            make_vault(settings, engine),
            tenant,
            "user_logout",
            target=f"web user {user.id}: {ended} session(s) ended",
        )
    return ended


_Tenant = Annotated[str, typer.Option(help="the tenant the user acts for")]
_Email = Annotated[str, typer.Option(help="login email")]
_Role = Annotated[
    str,
    typer.Option(
        help="admin (instructions, connections, users, notifications) · editor (syncs) · viewer (reads)"
    ),
]


def _new_password() -> str:
    password: str = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    return password


@user_app.command("add")
def user_add(tenant: _Tenant, email: _Email, role: _Role = "admin") -> None:
    """Create a login with a role (password from CRMHUB_WEB_PASSWORD, else prompted twice)."""
    user_id = add_user(load_settings(), tenant, email, _new_password(), role)
    out.print(f"web user created for tenant [bold]{tenant}[/] as {role} (id {user_id})")


@user_app.command("role")
def user_role(tenant: _Tenant, email: _Email, role: _Role) -> None:
    """Change a login's role; it applies from the user's next request."""
    user_id = set_user_role(load_settings(), tenant, email, role)
    out.print(f"web user {user_id} of tenant [bold]{tenant}[/] is now {role}")


@user_app.command("list")
def user_list(tenant: _Tenant) -> None:
    """The tenant's logins, one a line, tab-separated: id, email, created, last login, enabled, live
    sessions, role."""
    typer.echo("id\temail\tcreated\tlast_login\tenabled\tsessions\trole")
    for u in list_web_users(load_settings(), tenant):
        last = u["last_login"].isoformat(timespec="seconds") if u["last_login"] else "never"
        created = u["created"].isoformat(timespec="seconds")
        enabled = "yes" if u["enabled"] else "DISABLED"
        typer.echo(f"{u['id']}\t{u['email']}\t{created}\t{last}\t{enabled}\t{u['sessions']}\t{u['role']}")


@user_app.command("disable")
def user_disable(tenant: _Tenant, email: _Email) -> None:
    """Refuse the user's logins and end its sessions now (enable undoes it)."""
    user_id = set_user_enabled(load_settings(), tenant, email, enabled=False)
    out.print(f"web user {user_id} of tenant [bold]{tenant}[/] disabled; its sessions ended")


@user_app.command("enable")
def user_enable(tenant: _Tenant, email: _Email) -> None:
    """Let a disabled user log in again."""
    user_id = set_user_enabled(load_settings(), tenant, email, enabled=True)
    out.print(f"web user {user_id} of tenant [bold]{tenant}[/] enabled")


@user_app.command("remove")
def user_remove(tenant: _Tenant, email: _Email) -> None:
    """Delete the user and its sessions."""
    user_id = remove_user(load_settings(), tenant, email)
    out.print(f"web user {user_id} of tenant [bold]{tenant}[/] removed; its sessions ended")


@user_app.command("passwd")
def user_passwd(tenant: _Tenant, email: _Email) -> None:
    """Set a new password (from CRMHUB_WEB_PASSWORD, else prompted twice) and end its sessions."""
    ended = change_password(load_settings(), tenant, email, _new_password())
    out.print(f"password of the web user changed in tenant [bold]{tenant}[/]; {ended} session(s) ended")


@user_app.command("logout")
def user_logout(tenant: _Tenant, email: _Email) -> None:
    """End every session of the user (it stays able to log in)."""
    ended = web_user_logout(load_settings(), tenant, email)
    out.print(f"{ended} session(s) of the web user in tenant [bold]{tenant}[/] ended")
