"""``crmhub web user add|list|disable|enable|remove|passwd|logout`` (issue 16): each takes effect on a
live session at its next request."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.cli import app as cli
from schemas.settings import Settings
from store import users as user_store
from tests.api.web.conftest import PASSWORD, asgi_client, csrf_of, login

NEW_PASSWORD = "another long passphrase"


@pytest.fixture
def run(web_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(web_settings.data_dir))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", web_settings.database_url)
    return CliRunner()


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli, ["web", "user", *args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def _said(runner: CliRunner, *args: str) -> str:
    """The command's message, with rich's line wrapping undone."""
    return " ".join(_ok(runner, *args).split())


async def test_user_lifecycle_from_the_cli(
    run: CliRunner,
    app: FastAPI,
    tenant_user: tuple[str, str],
    db_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant, email = tenant_user
    who = ["--tenant", tenant, "--email", email]
    header, row = _ok(run, "list", "--tenant", tenant).splitlines()
    assert header.split("\t") == ["id", "email", "created", "last_login", "enabled", "sessions", "role"]
    assert row.split("\t")[1] == email and row.endswith("\tnever\tyes\t0\tadmin")
    async with asgi_client(app) as c:
        assert (await login(c, tenant, email)).status_code == 303
        assert _ok(run, "list", "--tenant", tenant).splitlines()[1].endswith("\tyes\t1\tadmin")  # 1 session

        assert "disabled; its sessions ended" in _said(run, "disable", *who)
        assert (await c.get("/")).status_code == 303
        assert "DISABLED" in _ok(run, "list", "--tenant", tenant)
        assert (await login(c, tenant, email)).status_code == 401

        _ok(run, "enable", *who)
        assert (await login(c, tenant, email)).status_code == 303
        assert "1 session(s)" in _said(run, "logout", *who)
        assert (await c.get("/")).status_code == 303

        assert (await login(c, tenant, email)).status_code == 303
        monkeypatch.setenv("CRMHUB_WEB_PASSWORD", NEW_PASSWORD)
        out = _said(run, "passwd", *who)
        assert "1 session(s) ended" in out and NEW_PASSWORD not in out
        assert (await c.get("/")).status_code == 303
        assert (await login(c, tenant, email, PASSWORD)).status_code == 401
        assert (await login(c, tenant, email, NEW_PASSWORD)).status_code == 303

        assert "removed" in _said(run, "remove", *who)
        assert (await c.get("/")).status_code == 303
    with db_engine.connect() as conn:
        assert conn.execute(select(user_store.web_users)).first() is None
        assert conn.execute(select(user_store.web_sessions)).first() is None


def test_cli_names_the_problem(
    run: CliRunner, tenant_user: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _ = tenant_user
    for command in ("disable", "enable", "remove", "passwd", "logout"):
        monkeypatch.setenv("CRMHUB_WEB_PASSWORD", NEW_PASSWORD)
        result = run.invoke(
            cli, ["web", "user", command, "--tenant", tenant, "--email", "nobody@acme.example"]
        )
        assert result.exit_code != 0
        assert "no web user with this email" in str(result.exception), command
        assert "crmhub web user list --tenant acme" in str(result.exception)
    missing = run.invoke(cli, ["web", "user", "list", "--tenant", "nope"])
    assert "no tenant 'nope'" in str(missing.exception)
    monkeypatch.setenv("CRMHUB_WEB_PASSWORD", "short")
    weak = run.invoke(cli, ["web", "user", "passwd", "--tenant", tenant, "--email", tenant_user[1]])
    assert "at least 12 characters" in str(weak.exception)


async def test_client_address_is_the_peer_without_trusted_proxies(
    app: FastAPI, tenant_user: tuple[str, str]
) -> None:
    """In-process too: X-Forwarded-For from anyone is ignored by default (the per-client limit)."""
    tenant, email = tenant_user
    async with asgi_client(app) as c:
        codes = []
        for i in range(6):
            page = await c.get("/login")
            r = await c.post(
                "/login",
                data={
                    "csrf_token": csrf_of(page.text),
                    "organisation": tenant,
                    "email": email,
                    "password": "x",
                },
                headers={"X-Forwarded-For": f"10.0.0.{i}"},
            )
            codes.append(r.status_code)
    assert codes == [401] * 5 + [429]
