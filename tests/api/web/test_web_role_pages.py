"""What each role sees is what each role may do (issue 18 item 5): for admin, editor and viewer, every
page the role can open is crawled from the dashboard (each in-app link and each GET form followed,
with the values the form would send), every form target (``action`` and each button's
``formaction``) and every in-app link is collected, and

* each one the role sees is one the server allows it: every link and GET form opens (200), every
  POST form, sent as the page fills it in, gets anything but 403 (or a 404/405 of a target that is
  not there) — with the real app, the sandbox CRMs connected through OAuth and the session Temporal
  dev server (so the run and schedule buttons render, on task queues of this test's own);
* each route the role may use (the app's routes, enumerated like ``tests/chaos/test_isolation.py``
  does) is the target of something the role sees — no lost buttons — except the few that are not
  buttons (:data:`NOT_ON_A_PAGE`, each with its reason);
* where an action is withheld, the page says who can do it (a ``role-note``), and the permission
  table the pages ask (``can``) agrees with the server's answer for every route of ``test_web_roles``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from temporalio.service import RPCError

from api.cli_web import add_user
from api.web.context import LazyTemporal
from api.web.permissions import RoutePermissions
from api.web.routes_syncs import SyncView
from sandbox.runtime import RunningSandbox
from schemas.settings import Settings
from schemas.sync import Progress, RunCounts, SyncPhase, SyncStatus, sync_workflow_id
from store import connections as connection_store
from store import dead_letters as dead_letter_store
from store import syncs as sync_store
from tests.api.web.conftest import PASSWORD, AppFactory, asgi_client, login, make_tenant
from tests.api.web.test_web_connect import BASE, connect, sandbox  # noqa: F401 (the sandbox fixture)
from tests.api.web.test_web_drift import MAPPING, SYNC, add_instruction, instruction, seed_drifted_sync
from tests.api.web.test_web_roles import _ask, _cases
from tests.api.web.test_web_subprocessors import _proposed
from tests.chaos.test_isolation import PUBLIC, routes_of
from tests.stack import sandbox_oauth_configs, stack_settings

ROLES = ("viewer", "editor", "admin")  # the admin last: its forms remove the other users
FULL_RUN = f"run-full-{SYNC}"

# Routes a logged-in user reaches without a button or link of a page.
NOT_ON_A_PAGE = {
    ("GET", "/oauth/callback"): "where the CRM's consent page redirects the browser back to",
    ("GET", "/api/syncs/{sync_id}/progress"): "the progress as JSON, for scripts",
    ("POST", "/syncs/{sync_id}/pause"): "shown only while a run goes: test_pause_and_resume_follow_the_role",
    ("POST", "/syncs/{sync_id}/resume"): "shown only while a run is paused: the same test",
}
# What a visible target must never answer: refused for the role, or not there.
NEVER = {403, 404, 405}


@dataclass
class Form:
    method: str
    action: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    formactions: list[str] = field(default_factory=list)


class _Html(HTMLParser):
    """The in-app links and the forms of a page, each form with the values a browser would send."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        has = {k for k, _ in attrs}
        if tag == "a" and a.get("href", "").startswith("/") and not a["href"].startswith("//"):
            self.links.append(a["href"])
        elif tag == "form":
            self._form = Form(a.get("method", "get").upper(), a.get("action", ""))
            self.forms.append(self._form)
        elif self._form is None or "disabled" in has:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind not in ("checkbox", "radio") or "checked" in has:
                self._form.fields.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select":
            self._select, self._options = a.get("name"), []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in has))
        elif tag == "button" and a.get("type", "submit") == "submit" and a.get("formaction"):
            self._form.formactions.append(a["formaction"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select" and self._select is not None and self._form is not None:
            picked = [v for v, chosen in self._options if chosen] or [v for v, _ in self._options[:1]]
            self._form.fields.extend((self._select, v) for v in picked)
            self._select = None


@dataclass
class Seen:
    """What one role saw: the pages it opened and every target on them."""

    pages: dict[str, str] = field(default_factory=dict)
    posts: list[tuple[str, list[tuple[str, str]], str]] = field(default_factory=list)  # action, fields, page
    targets: set[tuple[str, str]] = field(default_factory=set)  # (method, url)


async def _crawl(c: httpx.AsyncClient, role: str) -> Seen:
    seen = Seen()
    todo = ["/"]
    while todo:
        url = todo.pop(0)
        if url in seen.pages:
            continue
        assert len(seen.pages) < 80, f"{role}: the crawl does not end ({sorted(seen.pages)})"
        page = await c.get(url)
        assert page.status_code == 200, (role, url, page.status_code, page.text[:400])
        seen.pages[url] = page.text
        html = _Html()
        html.feed(page.text)
        for link in html.links:
            if not link.startswith("/static/"):
                seen.targets.add(("GET", link))
                todo.append(link)
        for form in html.forms:
            for action in [form.action, *form.formactions]:
                seen.targets.add((form.method, action))
                if form.method == "GET":
                    fields = [(k, v) for k, v in form.fields if k != "csrf_token"]
                    todo.append(f"{action}?{urlencode(fields)}" if fields else action)
                elif (action, form.fields) not in [(a, f) for a, f, _ in seen.posts]:
                    seen.posts.append((action, form.fields, url))
    return seen


def _as_data(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return data


def _post_order(post: tuple[str, list[tuple[str, str]], str]) -> int:
    """Send the forms that end things last: removing users, then logging out."""
    action = post[0]
    return 2 if action == "/logout" else 1 if action.endswith("/remove") else 0


@dataclass
class Tenant:
    id: str
    users: dict[str, str]  # role → email
    app: FastAPI
    settings: Settings


@pytest.fixture
async def seeded(
    app_factory: AppFactory,
    sandbox: RunningSandbox,  # noqa: F811
    web_settings: Settings,
    db_engine: Engine,
    temporal_env: Any,
) -> AsyncIterator[Tenant]:
    """A tenant whose pages show every action there is: both sandbox CRMs connected by OAuth, a
    connection needing re-authorisation, a sync under v1 of two instruction versions whose next run is
    refused for drift (point it at v2, move it), a run with a retryable dead letter, a proposed
    subprocessor change in its objection window, and one user of each role."""
    tenant = f"roles{uuid.uuid4().hex[:8]}"  # its workflow ids are this test's own on the session server
    make_tenant(db_engine, tenant, "Roles GmbH")
    users = {role: f"{role}@roles.example" for role in ROLES}
    for role, email in users.items():
        add_user(web_settings, tenant, email, PASSWORD, role)
    settings = stack_settings(web_settings.data_dir, web_settings.database_url, temporal_env)
    app = app_factory(
        settings=settings,
        temporal=LazyTemporal(settings),
        oauth_configs=sandbox_oauth_configs(sandbox, redirect_uri=f"{BASE}/oauth/callback"),
    )
    seed_drifted_sync(db_engine, tenant)
    add_instruction(db_engine, instruction(tenant, 2, list(MAPPING)))
    now = datetime.now(UTC)
    with db_engine.begin() as conn:
        row = sync_store.get_sync(conn, tenant, SYNC)
        assert row is not None
        connection_store.mark_reauthorization_required(
            conn, row.spec.source_connection_id, "refresh token revoked", now=now
        )
        refused = dead_letter_store.DeadLetter(
            f"push-{tenant}-1", tenant, SYNC, FULL_RUN, "batch-0", "kh_" + "f" * 32, b"sealed-record",
            "INVALID_EMAIL", "upsert refused: INVALID_EMAIL (Email is not a valid address)", now,
        )  # fmt: skip
        dead_letter_store.add_dead_letters(conn, [refused])
    _proposed(db_engine, timedelta(hours=1))
    async with asgi_client(app, BASE) as admin:
        assert (await login(admin, tenant, users["admin"])).status_code == 303
        for provider in ("salesforce", "hubspot"):
            await connect(admin, sandbox, provider)
    try:
        yield Tenant(tenant, users, app, settings)
    finally:
        client = await app.state.web.temporal()
        for sync_id in (SYNC, "contact-to-hubspot"):  # what the run buttons and the new-sync form started
            with contextlib.suppress(RPCError):  # not started, or finished
                await client.get_workflow_handle(sync_workflow_id(tenant, sync_id)).terminate("test over")
        app.state.web.close()


def _route_of(permissions: RoutePermissions, method: str, url: str) -> tuple[str, str]:
    rule = permissions.rule(method, url)
    assert rule is not None, f"{method} {url}: no such route"
    return method, rule.path


def _web_routes(app: FastAPI) -> set[tuple[str, str]]:
    """The routes a logged-in web user may be offered: not the public ones, nor the auditors' API."""
    return {
        (m, p)
        for m, p in routes_of(app)
        if (m, p) not in PUBLIC and m != "MOUNT" and not p.startswith("/audit/")
    }


async def test_each_role_sees_exactly_what_it_may_do(seeded: Tenant) -> None:
    permissions: RoutePermissions = seeded.app.state.permissions
    totals: dict[str, tuple[int, int, int]] = {}
    for role in ROLES:
        async with asgi_client(seeded.app, BASE) as c:
            assert (await login(c, seeded.id, seeded.users[role])).status_code == 303
            seen = await _crawl(c, role)
            answers = {}
            for action, fields, page in sorted(seen.posts, key=_post_order):
                answer = await c.post(action, data=_as_data(fields))
                answers[action] = answer.status_code
                assert answer.status_code not in NEVER, (
                    role,
                    page,
                    action,
                    answer.status_code,
                    answer.text[:300],
                )
        offered = {_route_of(permissions, m, u) for m, u in seen.targets}
        may = _web_routes(seeded.app) & {
            (m, r.path) for r in permissions.rules for m in r.methods if r.admits(role)
        }
        lost = may - offered - set(NOT_ON_A_PAGE)
        assert not lost, f"{role} may use these routes but no page offers them: {sorted(lost)}"
        assert offered <= may, f"{role} is offered routes it may not use: {sorted(offered - may)}"
        totals[role] = (len(seen.pages), len(seen.targets), len(seen.posts))
    pages = {role: n for role, (n, _, _) in totals.items()}
    assert pages["admin"] > pages["editor"] > pages["viewer"] >= 6, totals
    print(f"role pages: {totals} (pages, distinct targets, POST forms sent) per role")


async def test_a_withheld_action_is_said_where_it_would_be(seeded: Tenant) -> None:
    notes = {
        "/connections": "Only an admin can change connections",
        "/instructions": "Only an admin can change the processing instruction",
        "/syncs": "Only an admin or an editor can create, run, pause or schedule syncs",
        f"/syncs/{SYNC}": "Only an admin or an editor can run, pause, resume or schedule this sync",
        f"/syncs/{SYNC}/runs/{FULL_RUN}": "only an admin or an editor can start the retry",
        "/subprocessors": "Only an admin can object to a subprocessor change",
        "/account/password": "Only an admin manages users (roles, sessions, removal)",
    }
    withheld = {
        "viewer": set(notes),
        "editor": {"/connections", "/instructions", "/subprocessors", "/account/password"},
        "admin": set(),
    }
    for role in ROLES:
        async with asgi_client(seeded.app, BASE) as c:
            assert (await login(c, seeded.id, seeded.users[role])).status_code == 303
            for path, said in notes.items():
                text = " ".join((await c.get(path)).text.split())
                assert (said in text) is (path in withheld[role]), (role, path)
                assert (f"You are signed in as {role}" in text) is (
                    path in withheld[role] and path != "/account/password"
                ), (role, path)


def _progress(tenant: str, status: SyncStatus) -> Progress:
    return Progress(
        tenant=tenant, sync_id=SYNC, run_id="r1", status=status, phase=SyncPhase.PUSHING, counts=RunCounts()
    )


@pytest.mark.parametrize("role", ["admin", "editor", "viewer"])
def test_pause_and_resume_follow_the_role(app_factory: AppFactory, db_engine: Engine, role: str) -> None:
    """The buttons shown only while a run goes (or is paused), rendered by the page's own template."""
    make_tenant(db_engine, "acme")
    seed_drifted_sync(db_engine, "acme")
    app = app_factory()
    permissions: RoutePermissions = app.state.permissions
    with db_engine.connect() as conn:
        row = sync_store.get_sync(conn, "acme", SYNC)
    assert row is not None
    template = app.state.web.templates.get_template("sync_actions.html")
    for status, button in ((SyncStatus.RUNNING, "pause"), (SyncStatus.PAUSED, "resume")):
        view = SyncView(row, _progress("acme", status), None, "none")
        html = _Html()
        html.feed(
            template.render(
                v=view, s=row.spec, csrf_token="t", can=lambda m, u: permissions.allows(role, m, u)
            )
        )
        shown = {urlsplit(f.action).path for f in html.forms}
        assert shown == ({f"/syncs/{SYNC}/{button}"} if role != "viewer" else set()), (role, status)


@pytest.mark.parametrize("role", ["admin", "editor", "viewer"])
async def test_the_pages_table_agrees_with_the_server(
    app: FastAPI, web_settings: Settings, db_engine: Engine, role: str
) -> None:
    """``can`` (what the pages ask) and the server's answer, for every route ``test_web_roles`` asks."""
    make_tenant(db_engine, "acme", "Acme GmbH")
    add_user(web_settings, "acme", f"{role}@acme.example", PASSWORD, role)
    permissions: RoutePermissions = app.state.permissions
    cases = _cases()
    async with asgi_client(app) as c:
        assert (await login(c, "acme", f"{role}@acme.example")).status_code == 303
        for method, path, data, allowed in cases:
            served = (await _ask(c, method, path, data)).status_code != 403
            assert served is (role in allowed), (role, method, path)
            assert permissions.allows(role, method, path) is served, (role, method, path)
