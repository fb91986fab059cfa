"""Roles (issue 18): admin · editor · viewer. Only admins change instructions (and which one a sync
runs under), connections and users (their sessions, their removal); editors and admins create, run,
pause, resume and schedule syncs; every role reads. A refused request is 403 with a page naming the
role it needs and the user's own. Each route below is asked by each role; ``crmhub web user role``
changes a role for the next request of a live session."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.audit.reports import access_report
from api.cli import app as cli
from api.cli_web import add_user
from schemas.errors import ConfigError
from schemas.settings import Settings
from tests.api.web.conftest import PASSWORD, asgi_client, login, make_tenant, page_csrf

ROLES = ("admin", "editor", "viewer")

ADMIN_ONLY = [
    ("POST", "/connections/connect/hubspot", {}),
    ("GET", "/oauth/callback?state=abc&code=def", None),
    ("GET", "/instructions/edit?connection_id=nope", None),
    ("POST", "/instructions/preview", {"connection_id": "nope"}),
    ("POST", "/instructions/save", {"connection_id": "nope"}),
    ("POST", "/instructions/move-syncs", {"version": "1"}),
    ("POST", "/syncs/nosuch/instruction", {"version": "1"}),
    ("POST", "/subprocessors/object", {"version": "2", "choice": "keep"}),
    ("GET", "/users", None),
    ("POST", "/users/nosuch/logout", {}),
    ("POST", "/users/nosuch/remove", {}),
]
EDITOR = [
    ("GET", "/syncs/new", None),
    ("POST", "/syncs", {"name": "x"}),
    ("POST", "/syncs/nosuch/run", {}),
    ("POST", "/syncs/nosuch/pause", {}),
    ("POST", "/syncs/nosuch/resume", {}),
    ("POST", "/syncs/nosuch/schedule", {"every": "1h"}),
    ("POST", "/syncs/nosuch/retry-rejected", {}),
]
EVERYONE = [
    ("GET", "/", None),
    ("GET", "/syncs", None),
    ("GET", "/connections", None),
    ("GET", "/instructions", None),
    ("GET", "/subprocessors", None),
]


def _cases() -> list[tuple[str, str, dict[str, str] | None, set[str]]]:
    return (
        [(m, p, d, {"admin"}) for m, p, d in ADMIN_ONLY]
        + [(m, p, d, {"admin", "editor"}) for m, p, d in EDITOR]
        + [(m, p, d, set(ROLES)) for m, p, d in EVERYONE]
    )


async def _ask(c: httpx.AsyncClient, method: str, path: str, data: dict[str, str] | None) -> httpx.Response:
    if method == "GET":
        return await c.get(path)
    return await c.post(path, data={**(data or {}), "csrf_token": await page_csrf(c)})


@pytest.fixture
def role_users(web_settings: Settings, db_engine: Engine) -> dict[str, str]:
    make_tenant(db_engine, "acme", "Acme GmbH")
    users = {role: f"{role}@acme.example" for role in ROLES}
    for role, email in users.items():
        add_user(web_settings, "acme", email, PASSWORD, role)
    return users


@pytest.mark.parametrize("role", ROLES)
async def test_each_route_answers_each_role(app: FastAPI, role_users: dict[str, str], role: str) -> None:
    async with asgi_client(app) as c:
        assert (await login(c, "acme", role_users[role])).status_code == 303
        for method, path, data, allowed in _cases():
            answer = await _ask(c, method, path, data)
            if role in allowed:
                assert answer.status_code != 403, (role, method, path, answer.text[:300])
            else:
                assert answer.status_code == 403, (role, method, path)
                need = "admin" if allowed == {"admin"} else "admin or editor"
                assert f"This needs the {need} role; you are signed in as {role}." in answer.text
                assert "Forbidden" in answer.text  # the error page, not a bare body


async def test_a_role_change_applies_to_the_live_session(
    app: FastAPI,
    role_users: dict[str, str],
    web_settings: Settings,
    db_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(web_settings.data_dir))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", web_settings.database_url)
    async with asgi_client(app) as c:
        assert (await login(c, "acme", role_users["viewer"])).status_code == 303
        assert (await _ask(c, "POST", "/syncs/nosuch/pause", {})).status_code == 403
        who = ["--tenant", "acme", "--email", role_users["viewer"]]
        done = CliRunner().invoke(cli, ["web", "user", "role", *who, "--role", "editor"])
        assert done.exit_code == 0, done.output
        assert (await _ask(c, "POST", "/syncs/nosuch/pause", {})).status_code == 404  # allowed: no such sync
        listed = CliRunner().invoke(cli, ["web", "user", "list", "--tenant", "acme"])
        roles = {line.split("\t")[1]: line.split("\t")[-1] for line in listed.output.splitlines()[1:]}
        assert roles == {
            "admin@acme.example": "admin",
            "editor@acme.example": "editor",
            "viewer@acme.example": "editor",
        }
    # each user change is a human-access event with the operator as a keyed hash, never an e-mail
    access = access_report(db_engine, "acme")
    assert access["by_action"] == {"user_add": 3, "user_role": 1}
    (changed,) = [x for x in access["events"] if x["action"] == "user_role"]
    assert changed["actor"].startswith("cli:kh_") and changed["target"].endswith(" as editor")
    assert "@" not in json.dumps(access)


def test_an_unknown_role_names_the_choices(web_settings: Settings, db_engine: Engine) -> None:
    make_tenant(db_engine, "acme", "Acme GmbH")
    with pytest.raises(ConfigError, match="role 'owner' is not one of admin, editor, viewer"):
        add_user(web_settings, "acme", "x@acme.example", PASSWORD, "owner")
