"""The users page for admins (issue 18 item 5): an admin sees the tenant's users with their roles and
live sessions, ends a user's sessions (logged out at their next request), removes a user (gone, and
their login refused), and cannot remove themself; another tenant's user is a 404. Each change is a
human-access ledger event with the admin as actor and no e-mail. The CLI's ``logout`` is recorded too."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.audit.reports import access_report
from api.cli import app as cli
from api.cli_web import add_user
from schemas.settings import Settings
from tests.api.web.conftest import PASSWORD, asgi_client, login, make_tenant, page_csrf
from tests.api.web.test_web_users import run  # noqa: F401 (the CLI fixture)

USERS = {"admin": "ada@acme.example", "editor": "eddie@acme.example", "viewer": "vera@acme.example"}


@pytest.fixture
def ids(web_settings: Settings, db_engine: Engine) -> dict[str, str]:
    make_tenant(db_engine, "acme", "Acme GmbH")
    make_tenant(db_engine, "other", "Other Ltd")
    out = {role: add_user(web_settings, "acme", email, PASSWORD, role) for role, email in USERS.items()}
    out["theirs"] = add_user(web_settings, "other", "otto@other.example", PASSWORD, "viewer")
    return out


async def test_an_admin_ends_sessions_and_removes_users(
    app: FastAPI, ids: dict[str, str], db_engine: Engine
) -> None:
    async with (
        asgi_client(app) as admin,
        asgi_client(app) as admin_elsewhere,
        asgi_client(app) as editor,
        asgi_client(app) as viewer,
    ):
        for client, role in (
            (admin, "admin"),
            (admin_elsewhere, "admin"),
            (editor, "editor"),
            (viewer, "viewer"),
        ):
            assert (await login(client, "acme", USERS[role])).status_code == 303
        page = (await admin.get("/users")).text
        assert 'href="/users"' in page  # the nav offers it to the admin
        for role, email in USERS.items():
            row = re.search(rf'<tr id="user-{ids[role]}">(.*?)</tr>', page, re.S)
            assert row is not None and email in row.group(1) and f"<td>{role}</td>" in row.group(1)
        assert ids["theirs"] not in page and "otto@" not in page  # only the tenant's own users
        assert f'action="/users/{ids["viewer"]}/logout"' in page
        assert f'action="/users/{ids["editor"]}/remove"' in page
        assert f'action="/users/{ids["admin"]}/remove"' not in page  # not themself...
        assert "another admin can remove you" in page
        assert 'href="/users"' not in (await viewer.get("/")).text  # ...and no Users link for others

        csrf = await page_csrf(admin, "/users")
        ended = await admin.post(f"/users/{ids['viewer']}/logout", data={"csrf_token": csrf})
        assert ended.status_code == 303 and ended.headers["location"] == "/users?ended=1"
        assert (await viewer.get("/")).status_code == 303  # logged out at the next request
        assert (await login(viewer, "acme", USERS["viewer"])).status_code == 303  # may log in again

        mine = await admin.post(f"/users/{ids['admin']}/logout", data={"csrf_token": csrf})
        assert mine.status_code == 303 and mine.headers["location"] == "/users?ended=1"
        assert (await admin_elsewhere.get("/")).status_code == 303  # the admin's other session ended
        assert (await admin.get("/")).status_code == 200  # this one kept

        removed = await admin.post(f"/users/{ids['editor']}/remove", data={"csrf_token": csrf})
        assert removed.status_code == 303 and removed.headers["location"] == "/users?removed=1"
        assert (await editor.get("/")).status_code == 303
        assert (await login(editor, "acme", USERS["editor"])).status_code == 401
        assert USERS["editor"] not in (await admin.get("/users")).text

        myself = await admin.post(f"/users/{ids['admin']}/remove", data={"csrf_token": csrf})
        assert myself.status_code == 400 and "You cannot remove yourself" in myself.text
        for action in ("logout", "remove"):
            theirs = await admin.post(f"/users/{ids['theirs']}/{action}", data={"csrf_token": csrf})
            assert theirs.status_code == 404, action
            unknown = await admin.post(f"/users/no-such-user/{action}", data={"csrf_token": csrf})
            assert unknown.status_code == 404, action
        assert (await admin.post(f"/users/{ids['viewer']}/remove", data={})).status_code == 403  # no CSRF
        assert (
            await viewer.post(f"/users/{ids['admin']}/remove", data={"csrf_token": csrf})
        ).status_code == 403

    access = access_report(db_engine, "acme")
    web = [e for e in access["events"] if e["actor"].startswith("web:")]
    assert [(e["action"], e["actor"]) for e in web] == [
        ("user_logout", f"web:{ids['admin']}"),
        ("user_logout", f"web:{ids['admin']}"),
        ("user_remove", f"web:{ids['admin']}"),
    ]
    assert [e["target"] for e in web] == [
        f"web user {ids['viewer']}: 1 session(s) ended",
        f"web user {ids['admin']}: 1 session(s) ended",
        f"web user {ids['editor']}",
    ]
    assert "@" not in json.dumps(access)
    assert access_report(db_engine, "other")["by_action"] == {"user_add": 1}


async def test_the_cli_logout_is_recorded(
    app: FastAPI,
    ids: dict[str, str],
    db_engine: Engine,
    run: CliRunner,  # noqa: F811
) -> None:
    async with asgi_client(app) as viewer:
        assert (await login(viewer, "acme", USERS["viewer"])).status_code == 303
        done = run.invoke(cli, ["web", "user", "logout", "--tenant", "acme", "--email", USERS["viewer"]])
        assert done.exit_code == 0, done.output
        assert (await viewer.get("/")).status_code == 303
    (event,) = [e for e in access_report(db_engine, "acme")["events"] if e["action"] == "user_logout"]
    assert event["actor"].startswith("cli:kh_")
    assert event["target"] == f"web user {ids['viewer']}: 1 session(s) ended"
